"""CloudJobs: the job registry, the ``@jobs.job`` decorator and the producer API."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError

from cloudjobs.backends.base import Backend
from cloudjobs.backends.memory import MemoryBackend
from cloudjobs.clock import Clock, SystemClock
from cloudjobs.consumer import Consumer, ConsumerMiddleware
from cloudjobs.definition import JobDefinition, JobHandle, as_timedelta
from cloudjobs.errors import ConfigurationError, PayloadValidationError
from cloudjobs.job import Job
from cloudjobs.producer import EnqueueRequest, Producer
from cloudjobs.retry import RetryPolicy
from cloudjobs.settings import Settings, load_settings

if TYPE_CHECKING:
    from cloudjobs.runtimes.drain import DrainReport
    from cloudjobs.runtimes.worker import Worker

P = TypeVar("P")
R = TypeVar("R")

_json_adapter: TypeAdapter[JsonValue] = TypeAdapter(JsonValue)


class Register(Protocol):
    """The decorator ``@jobs.job(...)`` returns: it types the handle from the handler."""

    @overload
    def __call__(self, function: Callable[[P, Job], Awaitable[R]]) -> JobHandle[P, R]: ...
    @overload
    def __call__(self, function: Callable[[P], Awaitable[R]]) -> JobHandle[P, R]: ...
    @overload
    def __call__(self, function: Callable[[P, Job], R]) -> JobHandle[P, R]: ...
    @overload
    def __call__(self, function: Callable[[P], R]) -> JobHandle[P, R]: ...


class CloudJobs:
    """A set of job types and the queue they travel on.

    Args:
        settings: configuration; read from ``CLOUDJOBS_*`` variables on first use when omitted.
        backend: the queue; an :class:`~cloudjobs.backends.sqs.SqsBackend` built from the settings on
            first use when omitted.
        clock: time source for ``enqueued_at`` (and the memory backend built by :meth:`testing`).
        random: jitter source in ``[0, 1)`` for backoff (injectable for tests).

    Construction does no I/O and reads no environment, so a module-level ``jobs = CloudJobs()``
    is safe to import anywhere, including before a web server forks.
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        backend: Backend | None = None,
        clock: Clock | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        self._settings = settings
        self._backend = backend
        self._clock: Clock = clock or SystemClock()
        self._random = random
        self._registry: dict[str, JobDefinition] = {}
        self._middleware: list[ConsumerMiddleware] = []
        self._lock = threading.Lock()

    # -- configuration ----------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings in force (read from the environment on first use)."""
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def backend(self) -> Backend:
        """The queue backend (an SqsBackend from the settings unless one was given)."""
        with self._lock:
            if self._backend is None:
                self._backend = self._build_sqs_backend()
            return self._backend

    @property
    def clock(self) -> Clock:
        """The time source."""
        return self._clock

    @property
    def registry(self) -> dict[str, JobDefinition]:
        """Job type → definition (a copy)."""
        return dict(self._registry)

    def add_middleware(self, middleware: ConsumerMiddleware) -> None:
        """Add a hook around every handler call (runs in the order added)."""
        self._middleware.append(middleware)

    def _build_sqs_backend(self) -> Backend:
        settings = self.settings
        if not settings.queue_url and not settings.queue_name:
            raise ConfigurationError(
                "no queue configured: set CLOUDJOBS_QUEUE_URL or CLOUDJOBS_QUEUE_NAME",
                setting="CLOUDJOBS_QUEUE_URL",
            )
        from cloudjobs.backends.sqs import SqsBackend

        return SqsBackend(
            queue_url=settings.queue_url,
            queue_name=settings.queue_name,
            dlq_url=settings.dlq_url,
            region=settings.region,
            max_pool_connections=max(10, settings.concurrency + 4),
            wait_time_seconds=settings.wait_time_seconds,
        )

    # -- registry ---------------------------------------------------------------------------------

    def job(
        self,
        name: str,
        *,
        max_attempts: int | None = None,
        timeout: timedelta | float | None = None,
        retry: RetryPolicy | None = None,
    ) -> Register:
        """Register a handler under the job type ``name``.

        The handler takes ``(payload)`` or ``(payload, job)``; the payload's annotation (a pydantic
        model, a dataclass, ``dict``...) is its schema. ``async def`` handlers run on an event loop.

        Args:
            name: the job type, as written in each message.
            max_attempts: attempts in all before the DLQ (default: ``CLOUDJOBS_MAX_ATTEMPTS``).
            timeout: the handler's time limit, seconds or timedelta (default:
                ``CLOUDJOBS_JOB_TIMEOUT_SECONDS``).
            retry: a complete retry policy, replacing the backoff settings for this job.

        Raises:
            ConfigurationError: the name is taken, or the handler's signature does not fit.
        """
        timeout_delta = as_timedelta(timeout, name="timeout")

        def register(function: Callable[..., Any]) -> JobHandle[Any, Any]:
            if name in self._registry:
                raise ConfigurationError(f"job type {name!r} is registered twice")
            definition = JobDefinition.from_function(
                name,
                function,
                max_attempts=retry.max_attempts if retry and max_attempts is None else max_attempts,
                timeout=timeout_delta,
                retry=retry,
            )
            self._registry[name] = definition
            return JobHandle(self, definition)

        return register

    # -- producer ---------------------------------------------------------------------------------

    def enqueue(
        self,
        job_type: str | JobHandle[Any, Any],
        payload: Any,
        *,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        group_id: str | None = None,
        deduplication_id: str | None = None,
    ) -> str:
        """Enqueue one job; returns its job id.

        Args:
            job_type: the registered name (or its handle). Types registered elsewhere are allowed.
            payload: a pydantic model, or anything JSON-serialisable (validated against the job's
                payload type when it is registered here).
            delay: seconds or timedelta before the job is visible, 0–900 s (standard queues only).
            idempotency_key: the producer's key for effectively-once processing.
            group_id: FIFO message group (default: ``CLOUDJOBS_MESSAGE_GROUP_ID``, else the job type).
            deduplication_id: FIFO deduplication id (default: the job id).

        Raises:
            PayloadValidationError: the payload does not fit the job's payload type.
            PayloadTooLargeError: the message exceeds the queue's size limit.
            InvalidDelayError: the delay is out of range, or given on a FIFO queue.
            BackendError: the queue refused the message.
        """
        request = self._request(
            job_type,
            payload,
            delay=delay,
            idempotency_key=idempotency_key,
            group_id=group_id,
            deduplication_id=deduplication_id,
        )
        return self._producer().enqueue([request])[0]

    def enqueue_many(
        self,
        jobs: Iterable[tuple[str | JobHandle[Any, Any], Any]],
        *,
        delay: timedelta | float | None = None,
    ) -> list[str]:
        """Enqueue ``(job_type, payload)`` pairs in batches of ten; returns job ids in order.

        Every message is checked before any is sent. Entries the queue refuses are resent when the
        failure was on the service's side; what still fails is reported entry by entry.

        Raises:
            BatchEnqueueError: some entries could not be sent (``.sent`` holds the ids of the rest).
            PayloadValidationError, PayloadTooLargeError, InvalidDelayError: as for :meth:`enqueue`,
                before anything is sent.
        """
        requests = [self._request(job_type, payload, delay=delay) for job_type, payload in jobs]
        if not requests:
            return []
        return self._producer().enqueue(requests)

    def _producer(self) -> Producer:
        return Producer(self.backend, self._clock, default_group_id=self.settings.message_group_id)

    def _request(
        self,
        job_type: str | JobHandle[Any, Any],
        payload: Any,
        *,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        group_id: str | None = None,
        deduplication_id: str | None = None,
    ) -> EnqueueRequest:
        name = job_type.name if isinstance(job_type, JobHandle) else job_type
        definition = self._registry.get(name)
        if definition is not None:
            serialised = definition.serialise(payload)
        elif isinstance(payload, BaseModel):
            serialised = payload.model_dump(mode="json")
        else:
            try:
                serialised = _json_adapter.validate_python(payload)
            except ValidationError as exc:
                raise PayloadValidationError(
                    f"payload of job {name!r} is not JSON-serialisable: {exc.errors()[0]['msg']}",
                    job_name=name,
                ) from None
        return EnqueueRequest(
            job_type=name,
            payload=serialised,
            delay=as_timedelta(delay, name="delay") or timedelta(0),
            idempotency_key=idempotency_key,
            group_id=group_id,
            deduplication_id=deduplication_id,
        )

    # -- consumers --------------------------------------------------------------------------------

    def consumer(self) -> Consumer:
        """The consumer core for this registry and queue (used by every runtime)."""
        return Consumer(
            registry=self._registry,
            settings=self.settings,
            queue=self.backend.info(),
            random=self._random,
            middleware=self._middleware,
        )

    def worker(
        self,
        *,
        concurrency: int | None = None,
        prefetch: int | None = None,
        shutdown_timeout: timedelta | float | None = None,
    ) -> Worker:
        """A long-running worker (the ECS consumer); call ``.run()`` to start it.

        Args:
            concurrency: handlers run at once (default ``CLOUDJOBS_CONCURRENCY``).
            prefetch: messages held beyond the concurrency (default ``CLOUDJOBS_PREFETCH``).
            shutdown_timeout: how long ``stop()`` waits for running jobs, seconds or timedelta.
        """
        from cloudjobs.runtimes.worker import Worker

        return Worker(
            self,
            concurrency=concurrency,
            prefetch=prefetch,
            shutdown_timeout=as_timedelta(shutdown_timeout, name="shutdown_timeout"),
        )

    # -- testing ----------------------------------------------------------------------------------

    def drain(self, *, max_jobs: int = 10_000, skip_delays: bool = True) -> DrainReport:
        """Run everything enqueued on the memory backend to completion, in this thread.

        Retries and delays are skipped over by moving the memory queue's time forward
        (``skip_delays=False`` runs only what is visible now). For tests.

        Raises:
            ConfigurationError: the backend is not a :class:`MemoryBackend`.
        """
        from cloudjobs.runtimes.drain import drain

        backend = self.backend
        if not isinstance(backend, MemoryBackend):
            raise ConfigurationError("drain() runs on the memory backend; use jobs.testing() in tests")
        return drain(self.consumer(), backend, max_jobs=max_jobs, skip_delays=skip_delays)

    @contextlib.contextmanager
    def testing(self, backend: MemoryBackend | None = None) -> Iterator[MemoryBackend]:
        """Swap in a fresh :class:`MemoryBackend` (and default settings) for the ``with`` block."""
        memory = backend if backend is not None else MemoryBackend(clock=self._clock)
        saved_backend, saved_settings = self._backend, self._settings
        self._backend = memory
        if self._settings is None:
            self._settings = Settings(_env_file=None)
        try:
            yield memory
        finally:
            self._backend, self._settings = saved_backend, saved_settings

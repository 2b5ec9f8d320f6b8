"""CloudJobs: the job registry, the ``@jobs.job`` decorator and the producer API."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

from pydantic import JsonValue

from cloudjobs.aws_defaults import build_idempotency_store, build_named_sqs_backend, build_sqs_backend
from cloudjobs.backends import is_memory_backend
from cloudjobs.backends.base import Backend, QueueInfo
from cloudjobs.clock import Clock, SystemClock
from cloudjobs.consumer import Consumer
from cloudjobs.definition import IdempotencyKey, JobDefinition, JobHandle, as_timedelta
from cloudjobs.envelope import Envelope
from cloudjobs.errors import ConfigurationError, UnknownQueueError
from cloudjobs.flows.rules import OnChildFailure
from cloudjobs.groups import TenantKey
from cloudjobs.idempotency.record_middleware import record_middleware
from cloudjobs.ids import random_id
from cloudjobs.job import Job
from cloudjobs.middleware import ConsumerMiddleware, Middleware, as_middleware
from cloudjobs.payloads.store import PayloadStore
from cloudjobs.queues import DEFAULT_QUEUE, check_queue_name, queue_name_of
from cloudjobs.results import DEFAULT_RESULT_TIMEOUT, RememberedJobs
from cloudjobs.retry import RetryPolicy
from cloudjobs.scheduling.rules import DEFAULT_MISFIRE_GRACE, CatchUp, Overlap
from cloudjobs.settings import SettingsModel, load_settings
from cloudjobs.telemetry.metrics import DEFAULT_QUEUE_METRICS_INTERVAL
from cloudjobs.telemetry.switch import Telemetry, default_telemetry

# The producer side (requests, sending, pending records, uniqueness) is imported where it is first
# used: a consumer, a Lambda cold start above all, never loads it.
if TYPE_CHECKING:
    from cloudjobs.backends.memory import MemoryBackend
    from cloudjobs.dlq.queues import DeadLetterQueues
    from cloudjobs.flows.definition import Flow, JobSpec, SubFlow
    from cloudjobs.flows.store import FlowState, FlowStore
    from cloudjobs.idempotency.base import Cancellation, IdempotencyStore
    from cloudjobs.idempotency.status import JobStatus
    from cloudjobs.limits.base import Limiter
    from cloudjobs.limits.spec import LimitKey, RateLimit
    from cloudjobs.producer import EnqueueRequest, LaterSends, Offload, Producer
    from cloudjobs.producer_requests import RequestBuilder
    from cloudjobs.runtimes.aws_lambda import FifoRule, LambdaHandler
    from cloudjobs.runtimes.drain import DrainReport
    from cloudjobs.runtimes.worker import Worker
    from cloudjobs.scheduling.definition import Schedule
    from cloudjobs.scheduling.eventbridge import EventBridgeSchedules
    from cloudjobs.scheduling.registry import ScheduleRegistry
    from cloudjobs.scheduling.scheduler import Scheduler
    from cloudjobs.scheduling.state import ScheduleStore
    from cloudjobs.sending import QueueShare
    from cloudjobs.stats import QueueStats
    from cloudjobs.uniqueness.enqueue import Uniqueness
    from cloudjobs.uniqueness.state import UniqueUntil

P = TypeVar("P")
R = TypeVar("R")


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
    """A set of job types and the queues they travel on.

    An app has a default queue and any number of named ones (see :mod:`cloudjobs.queues`); a job
    type goes to the queue it is registered with (``@jobs.job(..., queue="critical")``), else to the
    default queue.

    Args:
        settings: configuration; read from ``CLOUDJOBS_*`` variables on first use when omitted.
        backend: the default queue; an :class:`~cloudjobs.backends.sqs.SqsBackend` built from the
            settings on first use when omitted.
        queues: the named queues, name → a URL, an SQS queue name or a backend (a
            :class:`MemoryBackend` in tests); when given, ``CLOUDJOBS_QUEUES`` is not read. Names
            are 1–80 letters, digits, ``-`` and ``_``; ``default`` is the default queue's.
        clock: time source for ``enqueued_at`` (and the memory backend built by :meth:`testing`).
        random: jitter source in ``[0, 1)`` for backoff (injectable for tests).
        idempotency_store: where idempotency and status records live; a
            :class:`~cloudjobs.idempotency.dynamodb.DynamoDbIdempotencyStore` on
            ``CLOUDJOBS_IDEMPOTENCY_TABLE`` is built on first use when omitted.
        telemetry: spans, metrics and trace propagation of the producer, the consumer and both
            runtimes (default: on, through the global OpenTelemetry providers);
            ``Telemetry(is_enabled=False)`` turns them off, the worker's queue gauges included.
        refuse_unregistered: make enqueueing a job type this app does not register raise
            :class:`~cloudjobs.errors.UnknownJobError` (a misspelt type fails at once). By default
            such a type is sent, for a consumer elsewhere that registers it, and its first enqueue
            logs a warning on ``cloudjobs.producer`` (unless the app registers no type at all).
        payload_store: where message bodies too large for their queue are kept (see
            docs/payloads.md); an :class:`~cloudjobs.payloads.s3.S3PayloadStore` on
            ``CLOUDJOBS_PAYLOAD_BUCKET`` is built on first use when omitted and that is set.

    Construction does no I/O and reads no environment, so a module-level ``jobs = CloudJobs()``
    is safe to import anywhere, including before a web server forks.
    """

    def __init__(
        self,
        *,
        settings: SettingsModel | None = None,
        backend: Backend | None = None,
        clock: Clock | None = None,
        random: Callable[[], float] | None = None,
        idempotency_store: IdempotencyStore | None = None,
        telemetry: Telemetry | None = None,
        refuse_unregistered: bool = False,
        queues: Mapping[str, str | Backend] | None = None,
        payload_store: PayloadStore | None = None,
    ) -> None:
        if queues is not None:
            for name in queues:
                _check_name(name)
                if name == DEFAULT_QUEUE:
                    raise ConfigurationError(
                        "the default queue is CloudJobs(backend=...) or CLOUDJOBS_QUEUE_URL", setting="queues"
                    )
        self._given_queues = dict(queues) if queues is not None else None
        self._named_backends: dict[str, Backend] = {}
        self._telemetry = telemetry or default_telemetry()
        self._idempotency_store = idempotency_store
        self._payload_store = payload_store
        self._settings = settings
        self._backend = backend
        self._clock: Clock = clock or SystemClock()
        self._random = random
        self._registry: dict[str, JobDefinition] = {}
        self._refuse_unregistered = refuse_unregistered
        self._request_builder: RequestBuilder | None = None
        self._middleware: list[Middleware] = []
        self._schedule_registry: ScheduleRegistry | None = None
        self._remembered = RememberedJobs()
        self._eventbridge: EventBridgeSchedules | None = None
        self._limiter: Limiter | None = None
        self._lock = threading.Lock()

    # -- configuration ----------------------------------------------------------------------------

    @property
    def _requests(self) -> RequestBuilder:
        """The producer's request builder, built on first use (see the imports' comment)."""
        if self._request_builder is None:
            from cloudjobs.producer_requests import RequestBuilder

            with self._lock:
                if self._request_builder is None:
                    self._request_builder = RequestBuilder(
                        self._registry, refuse_unregistered=self._refuse_unregistered
                    )
        return self._request_builder

    @property
    def _schedules(self) -> ScheduleRegistry:
        """The declared schedules, their registry built on first use (a consumer declares none)."""
        if self._schedule_registry is None:
            from cloudjobs.scheduling.registry import ScheduleRegistry

            with self._lock:
                if self._schedule_registry is None:
                    self._schedule_registry = ScheduleRegistry(self._registry)
        return self._schedule_registry

    @property
    def settings(self) -> SettingsModel:
        """The settings in force (read from the environment on first use)."""
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def backend(self) -> Backend:
        """The queue backend (an SqsBackend from the settings unless one was given)."""
        with self._lock:
            if self._backend is None:
                self._backend = build_sqs_backend(self.settings)
            return self._backend

    @property
    def queue_names(self) -> list[str]:
        """The app's queues: ``default`` first (when it is configured), then the named ones."""
        named = list(self._named_queue_config())
        has_default = (
            self._backend is not None or bool(self.settings.queue_url) or bool(self.settings.queue_name)
        )
        return [DEFAULT_QUEUE, *named] if has_default or not named else named

    def backend_of(self, queue: str | None = None) -> Backend:
        """The backend of one of the app's queues (None or ``"default"``: the default queue).

        Building it does no I/O.

        Raises:
            UnknownQueueError: the app configures no queue of that name.
            ConfigurationError: the default queue is asked for and none is configured.
        """
        if queue is None or queue == DEFAULT_QUEUE:
            return self.backend
        with self._lock:
            backend = self._named_backends.get(queue)
        if backend is not None:
            return backend
        value = self._named_queue_config().get(queue)
        if value is None:
            raise UnknownQueueError(queue=queue, known=self.queue_names)
        built = build_named_sqs_backend(self.settings, value) if isinstance(value, str) else value
        with self._lock:
            return self._named_backends.setdefault(queue, built)

    def _named_queue_config(self) -> Mapping[str, str | Backend]:
        if self._given_queues is not None:
            return self._given_queues
        return self.settings.queues

    @property
    def idempotency_store(self) -> IdempotencyStore:
        """The idempotency and status store (a DynamoDB one on the settings' table unless one was given).

        Raises:
            ConfigurationError: none was given and ``CLOUDJOBS_IDEMPOTENCY_TABLE`` is not set.
        """
        with self._lock:
            return self._store_unlocked()

    def _store_unlocked(self) -> IdempotencyStore:
        if self._idempotency_store is None:
            self._idempotency_store = build_idempotency_store(self.settings)
        return self._idempotency_store

    @property
    def payload_store(self) -> PayloadStore | None:
        """Where message bodies too large for their queue are kept: the one given, else an S3 store
        on ``CLOUDJOBS_PAYLOAD_BUCKET`` (built on first use, no I/O), else None (such bodies raise
        :class:`~cloudjobs.errors.PayloadTooLargeError`)."""
        with self._lock:
            if self._payload_store is None and self.settings.payload_bucket:
                from cloudjobs.payloads.s3 import S3PayloadStore

                self._payload_store = S3PayloadStore(
                    self.settings.payload_bucket,
                    kms_key_id=self.settings.payload_kms_key_id,
                    region=self.settings.region,
                )
            return self._payload_store

    @property
    def clock(self) -> Clock:
        """The time source."""
        return self._clock

    @property
    def telemetry(self) -> Telemetry:
        """The telemetry of this app's producer, consumer and runtimes."""
        return self._telemetry

    @property
    def registry(self) -> dict[str, JobDefinition]:
        """Job type → definition (a copy)."""
        return dict(self._registry)

    def add_middleware(self, middleware: Middleware | ConsumerMiddleware) -> None:
        """Add hooks around every run (called in the order added, settled in reverse).

        Takes a :class:`~cloudjobs.middleware.Middleware`. A
        :class:`~cloudjobs.middleware.ConsumerMiddleware` (``before_run`` / ``after_run``) still
        works, adapted with its old semantics, but is deprecated (a ``DeprecationWarning`` says so).
        """
        if not isinstance(middleware, Middleware):
            warnings.warn(
                f"{type(middleware).__name__} implements ConsumerMiddleware (before_run/after_run), "
                "which is deprecated: implement cloudjobs.middleware.Middleware (start → RunHandle)",
                DeprecationWarning,
                stacklevel=2,
            )
        self._middleware.append(as_middleware(middleware))

    # -- registry ---------------------------------------------------------------------------------

    def job(
        self,
        name: str,
        *,
        max_attempts: int | None = None,
        timeout: timedelta | float | None = None,
        retry: RetryPolicy | None = None,
        idempotent: bool = False,
        idempotency_key: IdempotencyKey | None = None,
        track_status: bool = False,
        queue: str | None = None,
        tenant: TenantKey | None = None,
        rate_limit: str | RateLimit | None = None,
        concurrency_limit: int | None = None,
        limit_key: LimitKey | None = None,
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
            idempotent: run the handler to completion at most once per idempotency key (see
                docs/idempotency.md for the exact guarantee); the key is the producer's
                ``idempotency_key``, else ``idempotency_key`` below, else the job id.
            idempotency_key: derive the key from the payload: a function of the payload, a field
                name, or field names (implies ``idempotent=True``).
            track_status: keep a status record for ``jobs.status(job_id)`` and ``job.progress(n)``
                without deduplicating runs (idempotent jobs always have one).
            queue: the app's queue jobs of this type go to (default: the default queue); checked
                against the configured queues when a job is enqueued.
            tenant: the fairness key of each job, a payload field's name or a function of the
                payload, sent as its message group (see :mod:`cloudjobs.groups`).
            rate_limit: at most this many starts per period, across every worker and Lambda:
                ``"100/m"``, ``"20/s"``, ``"5/10s"``, or a
                :class:`~cloudjobs.limits.spec.RateLimit` choosing the burst (see docs/limits.md).
            concurrency_limit: at most this many runs at once, across every worker and Lambda.
            limit_key: count the limits per key: a payload field's name or a function of the
                payload (default: one count for the job type).

        Raises:
            ConfigurationError: the name is taken, the queue name is malformed, or the handler's
                signature does not fit.
            InvalidLimitError: a malformed rate, a concurrency limit below 1, or a ``limit_key``
                field the payload's model does not have.
        """
        timeout_delta = as_timedelta(timeout, name="timeout")
        if queue is not None:
            _check_name(queue)
        limits = None
        if rate_limit is not None or concurrency_limit is not None or limit_key is not None:
            from cloudjobs.limits.spec import check_key_field, job_limits

            limits = job_limits(
                name, rate_limit=rate_limit, concurrency_limit=concurrency_limit, limit_key=limit_key
            )

        def register(function: Callable[..., Any]) -> JobHandle[Any, Any]:
            if name in self._registry:
                raise ConfigurationError(f"job type {name!r} is registered twice")
            definition = JobDefinition.from_function(
                name,
                function,
                max_attempts=retry.max_attempts if retry and max_attempts is None else max_attempts,
                timeout=timeout_delta,
                retry=retry,
                idempotent=idempotent,
                idempotency_key=idempotency_key,
                track_status=track_status,
                queue=None if queue == DEFAULT_QUEUE else queue,
                tenant=tenant,
            )
            if limits is not None:
                check_key_field(name, definition.payload_type, limit_key)
                definition = dataclasses.replace(definition, limits=limits)
            self._registry[name] = definition
            return JobHandle(self, definition)

        return register

    # -- schedules --------------------------------------------------------------------------------

    def schedule(
        self,
        name: str,
        *,
        job_type: str | JobHandle[Any, Any],
        payload: Any = None,
        cron: str | None = None,
        every: timedelta | float | None = None,
        tz: str | None = None,
        overlap: Overlap | Literal["allow", "skip"] = Overlap.ALLOW,
        catch_up: CatchUp | Literal["skip", "once"] = CatchUp.SKIP,
        misfire_grace: timedelta | float = DEFAULT_MISFIRE_GRACE,
    ) -> Schedule:
        """Declare a recurring schedule: each tick enqueues one ``job_type`` job with ``payload``.

        ``cloudjobs scheduler app:jobs`` (or :meth:`scheduler`) fires the ticks, one fire per tick
        however many schedulers run; each fire's job id and idempotency key are the schedule's name
        and the tick's time, so a duplicate fire is one job. See docs/scheduling.md.

        Args:
            name: unique in the app (and in the idempotency table): 1–64 letters, digits, ``-``,
                ``_`` and ``.``.
            job_type: the job type (or its handle) each tick enqueues.
            payload: the payload of every tick's job (default: an empty object); checked against the
                job's payload type when it is registered here.
            cron: a 5-field cron expression (minute hour day-of-month month day-of-week) read in
                ``tz``: a local time skipped by a daylight-saving change does not fire, one repeated
                fires once.
            every: an interval instead (seconds or timedelta, whole seconds), in elapsed time,
                counted from the Unix epoch (``every=300`` fires at :00, :05, ... UTC).
            tz: the IANA time zone of ``cron`` (default UTC); not given with ``every``.
            overlap: ``"allow"`` (default) fires every tick; ``"skip"`` skips a tick (counted and
                logged) while the previous run is still pending or running, which needs the job
                type registered here with ``track_status=True`` or ``idempotent=True``.
            catch_up: ticks later than ``misfire_grace`` (every scheduler down) are ``"skip"``-ped
                (counted and logged, the default) or fired ``"once"`` (the latest of them).
            misfire_grace: how late a tick may still fire, seconds or timedelta (default 60 s).

        Raises:
            InvalidScheduleError: the name is taken or malformed, ``cron`` is not five valid fields,
                ``tz`` is unknown, both or neither of ``cron`` and ``every`` are given, ``every``
                is not a positive whole number of seconds, ``overlap`` or ``catch_up`` is unknown,
                or the payload does not fit the job type.
        """
        return self._schedules.declare(
            name,
            job_type=job_type.name if isinstance(job_type, JobHandle) else job_type,
            payload={} if payload is None else payload,
            cron=cron,
            every=every,
            tz=tz,
            overlap=overlap,
            catch_up=catch_up,
            misfire_grace=misfire_grace,
        )

    @property
    def schedules(self) -> list[Schedule]:
        """The schedules declared with :meth:`schedule`, in order (a copy)."""
        return self._schedules.all()

    def scheduler(
        self,
        *,
        store: ScheduleStore | None = None,
        claim_lease: timedelta | float | None = None,
        clock: Clock | None = None,
    ) -> Scheduler:
        """The self-hosted scheduler of this app's schedules (``cloudjobs scheduler`` runs one);
        call ``.run()`` to fire ticks until ``.stop()``, or ``.run_pending()`` to fire what is due.

        Args:
            store: where the schedules' records and claims live (default: the idempotency store,
                shared by every scheduler process on ``CLOUDJOBS_IDEMPOTENCY_TABLE``).
            claim_lease: how long a claim protects a tick while its job is enqueued, seconds or
                timedelta (default 10 s): a scheduler that dies holding one is replaced this long
                (plus 3 s) after its claim.
            clock: the time source (default: the app's).

        Raises:
            InvalidScheduleError: a payload does not fit its job type, or ``overlap="skip"`` names a
                job type not registered here with a status record.
            ConfigurationError: no store is configured, or it keeps no schedule records, or
                ``CLOUDJOBS_SCHEDULES_MODE=eventbridge`` (EventBridge Scheduler fires them).
        """
        from cloudjobs.scheduling.scheduler import DEFAULT_CLAIM_LEASE, Scheduler, default_metrics
        from cloudjobs.scheduling.state import ScheduleStore

        if self.settings.schedules_mode == "eventbridge":
            raise ConfigurationError(
                "EventBridge Scheduler fires this app's schedules (cloudjobs schedules sync): a "
                "self-hosted scheduler would fire each tick a second time",
                setting="CLOUDJOBS_SCHEDULES_MODE",
            )
        schedules = self._schedules.checked()
        chosen = store if store is not None else self.idempotency_store
        if not isinstance(chosen, ScheduleStore):
            raise ConfigurationError(f"{type(chosen).__name__} keeps no schedule records")
        return Scheduler(
            schedules,
            store=chosen,
            fire=self._fire_tick,
            status=self.status,
            clock=clock or self._clock,
            claim_lease=as_timedelta(claim_lease, name="claim_lease") or DEFAULT_CLAIM_LEASE,
            metrics=default_metrics(is_enabled=self._telemetry.is_enabled),
        )

    def _fire_tick(self, schedule: Schedule, tick: datetime) -> str:
        """Enqueue a schedule's job for ``tick``, under the tick's job id and idempotency key.

        The pending record of a job that keeps one is written whatever ``CLOUDJOBS_STATUS_TRACKING``
        says: ``overlap="skip"`` reads the run's status from its enqueue on.
        """
        request = self._tick_request(schedule, schedule.job_id(tick))
        producer = self._producer(request.queue, write_pending=True)
        return producer.send(producer.check([request]))[0]

    def _tick_request(self, schedule: Schedule, job_id: str) -> EnqueueRequest:
        """The request of a schedule's fire under ``job_id``, also its idempotency key (its queue,
        tenant and group from the job type's registration)."""
        request = self._requests.build(schedule.job_type, schedule.payload, idempotency_key=job_id)
        return dataclasses.replace(request, job_id=job_id)

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
        queue: str | None = None,
        tenant: str | None = None,
        run_at: datetime | None = None,
        unique_for: timedelta | float | None = None,
        unique_key: str | None = None,
        unique_until: UniqueUntil | Literal["window", "finished"] | None = None,
        track_status: bool = False,
    ) -> str:
        """Enqueue one job; returns its job id (a unique job's repeat: the id of the window's job).

        Args:
            job_type: the registered name (or its handle). A type registered only elsewhere is
                sent (its first enqueue logs a warning), or refused with ``refuse_unregistered``.
            payload: a pydantic model, or anything JSON-serialisable (validated against the job's
                payload type when it is registered here).
            delay: seconds or timedelta before the job runs, up to 366 days (standard queues only;
                past 900 s the job hops until it is due, see :mod:`cloudjobs.hops`).
            idempotency_key: the producer's key for effectively-once processing.
            group_id: FIFO message group (default: the tenant, else ``CLOUDJOBS_MESSAGE_GROUP_ID``,
                else the job type).
            deduplication_id: FIFO deduplication id (default: the job id).
            queue: the app's queue to send to, instead of the job type's own.
            tenant: the fairness key, sent as the message group on standard queues too (SQS fair
                queues); default: what the job's registration derives from the payload.
            run_at: when the job is due, a timezone-aware datetime, instead of ``delay`` (in the
                past: now).
            unique_for: make the job unique for this long (seconds or timedelta, 1 s – 366 days):
                while the window lasts, another enqueue of the same job type and ``unique_key``
                sends nothing and returns this job's id (see docs/limits.md).
            unique_key: the key of a unique job, per job type (default: a hash of the payload);
                needs ``unique_for``.
            unique_until: ``"window"`` (default): the key is free when the window ends;
                ``"finished"``: also as soon as the job succeeded, failed or was cancelled (the job
                then keeps a status record, as with ``track_status=True``).
            track_status: keep a status record (and result) for this job alone, readable with
                :meth:`status` and :meth:`result` (needs the idempotency table; older consumers
                ignore it).

        Raises:
            UnknownJobError: the type is not registered here and the app refuses unregistered types.
            UnknownQueueError: the queue is not one of the app's.
            PayloadValidationError: the payload does not fit the job's payload type (a model of
                another class than the job's model included).
            PayloadTooLargeError: the message exceeds the queue's size limit.
            InvalidDelayError: the delay is out of range or given on a FIFO queue, or ``run_at`` is
                naive or given with a delay.
            InvalidGroupIdError: ``group_id`` is not one SQS accepts, or differs from the tenant.
            InvalidUniquenessError: ``unique_key`` or ``unique_until`` without ``unique_for``, or a
                value out of range.
            BackendError: the queue refused the message.
            IdempotencyStoreError: a unique job's reservation or a tracked job's record could not be
                written (nothing was sent).
            ConfigurationError: a unique or tracked job and no idempotency store configured.
        """
        request, uniqueness = self._build_one(
            job_type,
            payload,
            delay=delay,
            idempotency_key=idempotency_key,
            group_id=group_id,
            deduplication_id=deduplication_id,
            queue=queue,
            tenant=tenant,
            run_at=run_at,
            unique_for=unique_for,
            unique_key=unique_key,
            unique_until=unique_until,
            track_status=track_status,
        )
        return self._enqueue_one(request, uniqueness)

    def check_enqueue(
        self,
        job_type: str | JobHandle[Any, Any],
        payload: Any,
        *,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        queue: str | None = None,
        tenant: str | None = None,
        run_at: datetime | None = None,
        track_status: bool = False,
    ) -> QueueShare:
        """Build and check one job exactly as :meth:`enqueue` does, sending nothing.

        For integrations that send later, such as the transactional outbox
        (:mod:`cloudjobs.outbox`): the result's ``jobs.stored`` is what
        :meth:`~cloudjobs.producer.Producer.resume` takes back. The enqueue's trace is left open:
        finish it (``share.jobs.trace.finish()``) once the job is stored.

        Unique jobs (``unique_for``) are not built here: their reservation is part of the send.

        Raises:
            Everything :meth:`enqueue` raises before sending (not ``BackendError`` for a refused send).
        """
        request = self._requests.build(
            job_type,
            payload,
            delay=delay,
            idempotency_key=idempotency_key,
            group_id=group_id,
            deduplication_id=deduplication_id,
            queue=queue,
            tenant=tenant,
            run_at=run_at,
            track_status=track_status,
        )
        return self._check([request])[0]

    def producer_of(self, queue: str = DEFAULT_QUEUE) -> Producer:
        """The producer :meth:`enqueue` sends through to one of the app's queues (pending status
        records written as ``CLOUDJOBS_STATUS_TRACKING`` says).

        Raises:
            UnknownQueueError: the app configures no queue of that name.
        """
        return self._producer(queue)

    def enqueue_many(
        self,
        jobs: Iterable[tuple[str | JobHandle[Any, Any], Any]],
        *,
        delay: timedelta | float | None = None,
        queue: str | None = None,
        track_status: bool = False,
    ) -> list[str]:
        """Enqueue ``(job_type, payload)`` pairs in batches of ten; returns job ids in order.

        Every message is checked before any is sent. Each job goes to its type's queue (or to
        ``queue``), in batches per queue. Entries the queue refuses are resent when the failure was
        on the service's side; what still fails is reported entry by entry. ``track_status=True``
        keeps a status record for every job of the call (see :meth:`enqueue`). Unique jobs are
        not batched (each needs its own reservation before its send): enqueue them one by one with
        :meth:`enqueue`.

        Raises:
            BatchEnqueueError: some entries could not be sent (``.sent`` holds the ids of the rest).
            UnknownJobError, UnknownQueueError, PayloadValidationError, PayloadTooLargeError,
            InvalidDelayError, InvalidGroupIdError: as for :meth:`enqueue`, before anything is sent.
        """
        requests = [
            self._requests.build(job_type, payload, delay=delay, queue=queue, track_status=track_status)
            for job_type, payload in jobs
        ]
        if not requests:
            return []
        return self._send(self._check(requests))

    async def enqueue_async(
        self,
        job_type: str | JobHandle[Any, Any],
        payload: Any,
        *,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        queue: str | None = None,
        tenant: str | None = None,
        run_at: datetime | None = None,
        unique_for: timedelta | float | None = None,
        unique_key: str | None = None,
        unique_until: UniqueUntil | Literal["window", "finished"] | None = None,
        track_status: bool = False,
    ) -> str:
        """:meth:`enqueue` for async code: the payload is checked here, and the blocking requests
        (a unique job's reservation, the send, a pending status record) run in a worker thread, so
        the event loop never waits.

        Raises:
            Everything :meth:`enqueue` raises.
        """
        request, uniqueness = self._build_one(
            job_type,
            payload,
            delay=delay,
            idempotency_key=idempotency_key,
            group_id=group_id,
            deduplication_id=deduplication_id,
            queue=queue,
            tenant=tenant,
            run_at=run_at,
            unique_for=unique_for,
            unique_key=unique_key,
            unique_until=unique_until,
            track_status=track_status,
        )
        import asyncio  # loaded by the first async call

        return await asyncio.to_thread(self._enqueue_one, request, uniqueness)

    async def enqueue_many_async(
        self,
        jobs: Iterable[tuple[str | JobHandle[Any, Any], Any]],
        *,
        delay: timedelta | float | None = None,
        queue: str | None = None,
        track_status: bool = False,
    ) -> list[str]:
        """:meth:`enqueue_many` for async code; the sends run in a worker thread.

        Raises:
            Everything :meth:`enqueue_many` raises.
        """
        requests = [
            self._requests.build(job_type, payload, delay=delay, queue=queue, track_status=track_status)
            for job_type, payload in jobs
        ]
        if not requests:
            return []
        import asyncio

        return await asyncio.to_thread(lambda: self._send(self._check(requests)))

    def _build_one(
        self,
        job_type: str | JobHandle[Any, Any],
        payload: Any,
        *,
        unique_for: timedelta | float | None,
        unique_key: str | None,
        unique_until: UniqueUntil | str | None,
        track_status: bool,
        **options: Any,
    ) -> tuple[EnqueueRequest, Uniqueness | None]:
        """One job's request and the uniqueness it asks for (checked before anything is sent)."""
        from cloudjobs.uniqueness.enqueue import uniqueness_of
        from cloudjobs.uniqueness.state import UniqueUntil

        request = self._requests.build(job_type, payload, track_status=track_status, **options)
        uniqueness = uniqueness_of(
            request.job_type,
            request.payload,
            unique_for=unique_for,
            unique_key=unique_key,
            unique_until=unique_until,
        )
        if uniqueness is not None and uniqueness.until is UniqueUntil.FINISHED:
            # Whether the first job finished is read from its status record.
            request = dataclasses.replace(request, track_status=True)
        return request, uniqueness

    def _enqueue_one(self, request: EnqueueRequest, uniqueness: Uniqueness | None) -> str:
        if uniqueness is None:
            return self._send(self._check([request]))[0]
        from cloudjobs.idempotency.base import RecordReader
        from cloudjobs.idempotency.pending import record_key_of
        from cloudjobs.uniqueness.enqueue import enqueue_unique
        from cloudjobs.uniqueness.state import UniquenessStore

        store = self.idempotency_store
        if not isinstance(store, UniquenessStore):
            raise ConfigurationError(f"{type(store).__name__} keeps no unique-job reservations")

        def send(job_id: str) -> str:
            return self._send(self._check([dataclasses.replace(request, job_id=job_id)]))[0]

        def record_key(job_id: str) -> str | None:
            return record_key_of(self._envelope_of(request, job_id), self._registry)

        job_id, held = enqueue_unique(
            uniqueness,
            job_type=request.job_type,
            job_id=random_id(),
            store=store,
            records=lambda: store if isinstance(store, RecordReader) else None,
            send=send,
            record_key=record_key,
            reservation=timedelta(seconds=self.settings.unique_reservation_seconds),
            now=self._clock.now,
            # The store's own conditions allow for clock skew; the producer just asks.
            clock_skew=timedelta(0),
        )
        if held is not None:
            self._remembered.remember(held.job_id, held.record_key)
        return job_id

    def _envelope_of(self, request: EnqueueRequest, job_id: str) -> Envelope:
        """The envelope fields a record key is derived from (the rest is never read)."""
        return Envelope(
            id=job_id,
            type=request.job_type,
            payload=request.payload,
            correlation_id="-",
            enqueued_at=self._clock.now(),
            idempotency_key=request.idempotency_key,
            track_status=request.track_status,
        )

    def _check(self, requests: Sequence[EnqueueRequest]) -> list[QueueShare]:
        from cloudjobs.sending import check_by_queue

        return check_by_queue(requests, self._producer)

    def _send(self, shares: list[QueueShare]) -> list[str]:
        from cloudjobs.sending import send_by_queue

        return send_by_queue(shares)

    def _producer(self, queue: str = DEFAULT_QUEUE, *, write_pending: bool = False) -> Producer:
        from cloudjobs.idempotency.pending import record_key_of
        from cloudjobs.producer import Producer

        backend = self.backend_of(queue)
        is_tracking = write_pending or self.settings.status_tracking

        def before_send(envelopes: Sequence[Envelope]) -> None:
            tracked = (
                envelopes if is_tracking else [envelope for envelope in envelopes if envelope.track_status]
            )
            if tracked:
                self._write_pending(tracked)
            self._remembered.remember_sent(
                envelopes, lambda envelope: record_key_of(envelope, self._registry)
            )

        return Producer(
            backend,
            self._clock,
            default_group_id=self.settings.message_group_id,
            before_send=before_send,
            telemetry=self._telemetry,
            hop=self.settings.hop,
            later=self._later_sends(backend),
            offload=self._offload,
            send_concurrency=self.settings.send_concurrency,
        )

    @property
    def _offload(self) -> Offload | None:
        from cloudjobs.producer import Offload

        store = self.payload_store
        return None if store is None else Offload(store, self.settings.payload_threshold_bytes)

    def _later_sends(self, backend: Backend) -> LaterSends | None:
        """EventBridge Scheduler's one-time schedules for jobs due past 15 minutes, when
        ``CLOUDJOBS_LONG_DELAYS=eventbridge`` and the queue is an SQS queue (memory queues hop)."""
        if self.settings.long_delays != "eventbridge":
            return None
        from cloudjobs.backends.sqs import SqsBackend

        if not isinstance(backend, SqsBackend):
            return None
        from cloudjobs.scheduling.eventbridge import EventBridgeDelays

        return EventBridgeDelays(self.eventbridge_schedules, backend.queue_url)

    @property
    def eventbridge_schedules(self) -> EventBridgeSchedules:
        """The app's EventBridge Scheduler schedule group (``CLOUDJOBS_SCHEDULE_GROUP``), built on
        first use.

        Raises:
            ConfigurationError: the group or the scheduler's role is not configured.
        """
        if self._eventbridge is None:
            from cloudjobs.aws_defaults import build_eventbridge_schedules

            # Two threads may both build one: harmless, the second replaces the first.
            self._eventbridge = build_eventbridge_schedules(self.settings)
        return self._eventbridge

    def _write_pending(self, envelopes: Sequence[Envelope]) -> None:
        """Write a ``pending`` record for each job that keeps one (see :func:`write_pending`)."""
        from cloudjobs.idempotency.pending import write_pending

        write_pending(
            envelopes,
            registry=self._registry,
            store=lambda: self.idempotency_store,
            retention=self._retention,
        )

    @property
    def _retention(self) -> timedelta:
        return timedelta(seconds=self.settings.idempotency_retention_seconds)

    def result(self, job_id: str, *, timeout: timedelta | float = DEFAULT_RESULT_TIMEOUT) -> JsonValue:
        """Wait for a job's result: its handler's return value as JSON values (a model comes back as
        a dict), or None when it returned nothing or its result was not stored (too large).

        Works for jobs that keep a record: registered with ``track_status=True`` or
        ``idempotent=True``, or enqueued with ``track_status=True``. On DynamoDB the record is polled
        with one strongly consistent GetItem, at once, then after 0.1, 0.2, 0.4, 0.8 s and every
        second after that: about 5 reads in the first second, then one per second of waiting. A job
        id this process did not enqueue is first found on the job-id index (a Query, repeated for up
        to 2 s while the index catches up). On the memory store the wait ends at the store's next
        write: in a single-threaded test, ``drain()`` first, then ``result(job_id)`` answers at once
        (``timeout=0`` never waits). See :mod:`cloudjobs.results`.

        Args:
            job_id: the job (a duplicate's id reads the first job's record).
            timeout: how long to wait, seconds or timedelta (default 30 s; 0: read once).

        Raises:
            JobFailedError: the job went to the dead-letter queue (``.error`` says why).
            JobCancelledError: the job was cancelled.
            ResultTimeoutError: the job did not finish within ``timeout`` (also a ``TimeoutError``).
            JobNotTrackedError: the job keeps no record, so there is no result to wait for.
            IdempotencyStoreError: the store could not be reached.
            ConfigurationError: no store is configured.
        """
        from cloudjobs.results import wait_for_result

        return wait_for_result(
            self.idempotency_store,
            job_id,
            timeout=as_timedelta(timeout, name="timeout") or timedelta(0),
            remembered=self._remembered,
            now=self._clock.now,
            retention=self._retention,
        )

    async def result_async(
        self, job_id: str, *, timeout: timedelta | float = DEFAULT_RESULT_TIMEOUT
    ) -> JsonValue:
        """:meth:`result` for async code: the wait runs in a worker thread (one thread of the
        default executor per waiting call), so the event loop never blocks.

        Raises:
            Everything :meth:`result` raises.
        """
        import asyncio

        return await asyncio.to_thread(self.result, job_id, timeout=timeout)

    def status(self, job_id: str) -> JobStatus | None:
        """The status (and result) of a job that keeps a record, or None if there is none (yet).

        A job cancelled with :meth:`cancel` reads ``cancelled`` whether or not it keeps a record (its
        marker says so; ``job_type`` is then empty: the marker does not know it). On DynamoDB this
        is one Query on the job-id index, which is eventually consistent (a job that started a moment
        ago may not be visible yet). When it finds no record: one GetItem for an alias (with
        ``CLOUDJOBS_STATUS_TRACKING``, a duplicate enqueued under a live record's idempotency key is
        pointed at that record, and reads its status: one more GetItem), and one for a cancellation
        marker. Without status tracking a duplicate has no status of its own: ``None`` until its
        delivery is acknowledged as a duplicate, and ``None`` after.
        Records are forgotten after ``CLOUDJOBS_IDEMPOTENCY_RETENTION_SECONDS``.

        Raises:
            IdempotencyStoreError: the store could not be reached.
            ConfigurationError: no store is configured.
        """
        from cloudjobs.idempotency.status import find_status

        return find_status(self.idempotency_store, job_id, now=self._clock.now(), retention=self._retention)

    def cancel(self, job_id: str) -> Cancellation:
        """Cancel a job: a job that has not started never runs; a running one sees ``job.cancelled``.

        A job with a record (``idempotent`` / ``track_status``) is cancelled through it, found by
        job id on the index (one Query, then a conditional UpdateItem). Without a record a marker is
        written, which consumers check before running jobs that keep no record. See
        docs/operations.md. With ``CLOUDJOBS_LONG_DELAYS=eventbridge`` the job's one-time schedule,
        if it has one, is deleted too (one DeleteSchedule).

        Returns:
            What happened (``.outcome``: cancelled, requested, marked or already finished), the
            record after it (``.record``; None for a marker), and whether a waiting schedule was
            deleted (``.schedule_deleted``).

        Raises:
            IdempotencyStoreError: the store could not be reached.
            ConfigurationError: no store is configured, or it does not support cancellation.
            BackendError: EventBridge Scheduler could not delete the job's schedule (the record or
                marker is written: a delivery is still cancelled).
        """
        from cloudjobs.idempotency.base import JobControlStore

        store = self.idempotency_store
        if not isinstance(store, JobControlStore):
            raise ConfigurationError(f"{type(store).__name__} does not support cancellation")
        cancellation = store.cancel(job_id, retention=self._retention)
        if self.settings.long_delays == "eventbridge":
            from cloudjobs.scheduling.eventbridge import delay_schedule_name

            # After the record: a schedule that fires meanwhile delivers a job that is cancelled.
            if self.eventbridge_schedules.delete(delay_schedule_name(job_id)):
                cancellation = dataclasses.replace(cancellation, schedule_deleted=True)
        return cancellation

    def stats(self, *, include_age: bool = False, queue: str | None = None) -> QueueStats:
        """A queue's depths (visible, in flight, delayed), its DLQ's depth, and its health.

        Args:
            include_age: also read the oldest message's age from CloudWatch (one GetMetricData);
                None in the result means unknown, and never counts as unhealthy.
            queue: which of the app's queues (default: the default queue).

        Raises:
            UnknownQueueError: the queue is not one of the app's.
            BackendError: the queue's attributes could not be read.
            ConfigurationError: the backend reports no counts.
        """
        from cloudjobs.stats import collect_stats

        return collect_stats(self.backend_of(queue), self.settings, include_age=include_age)

    def stats_all(self, *, include_age: bool = False) -> dict[str, QueueStats]:
        """:meth:`stats` of every queue of the app, by queue name (``default`` first).

        Raises:
            BackendError, ConfigurationError: as :meth:`stats`, for the first queue that fails.
        """
        return {name: self.stats(include_age=include_age, queue=name) for name in self.queue_names}

    @property
    def dlq(self) -> DeadLetterQueues:
        """The dead-letter queues of this app's queues: ``list``, ``redrive`` and ``purge``, each
        with ``queue=`` (default: the default queue's; ``purge`` needs it when the app has several).

        See docs/operations.md. Building it does no I/O.
        """
        from cloudjobs.dlq.queues import DeadLetterQueues

        return DeadLetterQueues(
            self.backend_of, self.queue_names, clock=self._clock, payloads=self.payload_store
        )

    # -- consumers --------------------------------------------------------------------------------

    def consumer(self, queue: str | None = None) -> Consumer:
        """The consumer core for this registry and one of the app's queues (used by every runtime).

        Raises:
            UnknownQueueError: the queue is not one of the app's.
            BackendError: the queue's configuration could not be read.
        """
        return self.consumer_on(self.backend_of(queue))

    def consumer_on(self, backend: Backend) -> Consumer:
        """The consumer core for this registry on any backend (a queue the app learns of at run
        time: a Lambda event source, for one). Reads the queue's configuration (once per backend).

        Raises:
            BackendError: the queue's configuration could not be read.
        """
        queue = backend.info()
        payloads = self.payload_store
        deletes = payloads is not None and self.settings.payload_delete
        middleware: list[Middleware] = []
        if deletes and payloads is not None:
            from cloudjobs.payloads.resolve import PayloadDeletion

            # Before the record middleware, so that it deletes after the record says completed.
            middleware.append(PayloadDeletion(payloads))
        middleware += list(self._middleware)
        # Limits come before the records: a deferred job takes no lease and leaves its status alone.
        middleware += self._limit_middleware(backend, queue)
        # Flows before the record middleware, so that a child is counted after its record is final.
        middleware += self._flow_middleware(backend)
        middleware += record_middleware(
            self._registry,
            self.settings,
            queue_visibility=queue.visibility_timeout,
            clock=self._clock,
            store=lambda: self.idempotency_store,
            has_store=self._idempotency_store is not None or bool(self.settings.idempotency_table),
        )
        return Consumer(
            registry=self._registry,
            settings=self.settings,
            queue=queue,
            random=self._random,
            middleware=middleware,
            telemetry=self._telemetry,
            # A memory queue's time moves on with drain() and advance(): due times follow it.
            clock=backend if is_memory_backend(backend) else self._clock,
            payloads=payloads,
            is_completed=self._is_completed if deletes else None,
        )

    def _flow_middleware(self, backend: Backend) -> list[Middleware]:
        """The flow middleware when a store is configured (see :mod:`cloudjobs.flows.middleware`)."""
        if self._idempotency_store is None and not self.settings.idempotency_table:
            return []
        from cloudjobs.flows.middleware import FlowMiddleware

        # A memory queue's time moves on with drain() and advance(): the flow's deadline follows it.
        now = backend.now if is_memory_backend(backend) else self._clock.now
        return [FlowMiddleware(self._flow_store, send_parent=self._send_flow_parent, now=now)]

    def _flow_store(self) -> FlowStore:
        from cloudjobs.flows.store import KeepsFlows

        store = self.idempotency_store
        if not isinstance(store, KeepsFlows):
            raise ConfigurationError(f"{type(store).__name__} keeps no flows")
        return store.flows

    def _send_flow_parent(self, state: FlowState) -> None:
        """Send a ready flow's parent now (its ``early`` message, under its job id)."""
        from cloudjobs.flows.definition import EARLY_ROUTE
        from cloudjobs.producer import EnqueueRequest

        request = EnqueueRequest(
            job_type=state.parent_type,
            payload=state.parent_payload,
            queue=state.parent_queue,
            job_id=state.parent_id,
            track_status=True,
            flow_parent=state.member_of,
            flow_route=EARLY_ROUTE,
        )
        self._send(self._check([request]))

    def flow(
        self,
        parent: JobSpec,
        children: Sequence[JobSpec | SubFlow],
        *,
        on_child_failure: OnChildFailure | Literal["fail", "ignore"] = OnChildFailure.FAIL,
        timeout: timedelta | float | None = None,
    ) -> Flow:
        """Enqueue ``children`` now and ``parent`` to run once, after the last of them finished;
        the parent's handler reads their results with ``job.child_results()``.

        Every job of a flow keeps a status record (they are enqueued with ``track_status=True``);
        ``jobs.status(flow.parent_id)`` reads ``waiting_children`` with counts until the children
        finished. See docs/flows.md.

        Args:
            parent: ``(job type or handle, payload)`` of the parent.
            children: ``(job type or handle, payload)`` pairs, or nested flows
                (:func:`cloudjobs.flows.subflow`): 1 to 1,000 per flow.
            on_child_failure: ``"fail"`` (default): once a child went to the dead-letter queue, the
                parent goes there too, with the reason ``child_failed``, without running;
                ``"ignore"``: the parent runs with the results that exist.
            timeout: how long the parent waits for its children, seconds or timedelta (default one
                hour, less than the records' retention): then it follows ``on_child_failure``.

        Raises:
            InvalidFlowError: no children, an unknown rule, or a timeout out of range.
            FlowTooLargeError: more than 1,000 children in one flow.
            IdempotencyStoreError: a flow's record could not be written (nothing was sent).
            ConfigurationError: no store is configured, or it keeps no flows.
            Everything :meth:`enqueue` raises for one of the messages.
        """
        from cloudjobs.flows.create import FlowSender, create_flow
        from cloudjobs.flows.definition import SubFlow
        from cloudjobs.idempotency.pending import record_key_of

        sender = FlowSender(
            build=self._requests.build,
            record_key=lambda request, job_id: record_key_of(
                self._envelope_of(request, job_id), self._registry
            ),
            check=self._check,
            send=self._send,
            store=self._flow_store(),
            now=self._clock.now,
            retention=self._retention,
        )
        return create_flow(sender, SubFlow(parent, tuple(children), on_child_failure, timeout))

    def _is_completed(self, job_id: str) -> bool:
        from cloudjobs.idempotency.status import JobState

        status = self.status(job_id)
        return status is not None and status.state is JobState.COMPLETED

    def _limit_middleware(self, backend: Backend, queue: QueueInfo) -> list[Middleware]:
        """The limits stage (see :mod:`cloudjobs.limits.middleware`), when a job type has limits."""
        if not any(definition.limits is not None for definition in self._registry.values()):
            return []
        from cloudjobs.limits.middleware import build_limiter, limit_middleware

        def limiter(clock: Clock) -> Limiter:
            with self._lock:
                if self._limiter is None:
                    self._limiter = build_limiter(self._store_unlocked(), clock)
                return self._limiter

        return list(
            limit_middleware(
                self._registry,
                self.settings,
                backend=backend,
                is_fifo=queue.is_fifo,
                queue_visibility=queue.visibility_timeout,
                limiter=limiter,
                clock=self._clock,
                random=self._random,
                is_metered=self._telemetry.is_enabled,
            )
        )

    def worker(
        self,
        *,
        queues: Mapping[str, int] | Sequence[str] | None = None,
        concurrency: int | None = None,
        queue_concurrency: Mapping[str, int] | None = None,
        prefetch: int | None = None,
        shutdown_timeout: timedelta | float | None = None,
        queue_metrics_interval: timedelta | float | None = DEFAULT_QUEUE_METRICS_INTERVAL,
        stall_timeout: timedelta | float | None = None,
        health_port: int | None = None,
        health_address: str = "127.0.0.1",
    ) -> Worker:
        """A long-running worker (the ECS consumer); call ``.run()`` to start it.

        Args:
            queues: the app's queues to consume: weights by name for weighted polling
                (``{"critical": 6, "default": 3, "bulk": 1}``), names for strict order
                (``["critical", "default"]``; lower queues still get one job start in ten while
                they have work), or None for the default queue alone. See
                :mod:`cloudjobs.runtimes.worker`.
            concurrency: handlers run at once, over every queue (default ``CLOUDJOBS_CONCURRENCY``).
            queue_concurrency: handler slots a queue may hold at once, by name (``{"bulk": 4}``),
                so a saturating queue leaves the rest to the others.
            prefetch: messages a queue may hold beyond its handler slots (default
                ``CLOUDJOBS_PREFETCH``).
            shutdown_timeout: how long ``stop()`` waits for running jobs, seconds or timedelta.
            queue_metrics_interval: time between reads of the queue's counts for the queue gauges,
                seconds or timedelta (one GetQueueAttributes per queue each time); None turns the
                reader off.
            stall_timeout: how long the receive loop may go without completing a poll before the
                worker reports a stall, seconds or timedelta (default
                ``CLOUDJOBS_STALL_TIMEOUT_SECONDS``).
            health_port: serve ``GET /healthz`` (200 healthy, 503 stalled) on this port; 0 picks a
                free one; None serves nothing.
            health_address: the address the health endpoint listens on.

        Raises:
            UnknownQueueError: ``queues`` names a queue the app does not configure.
            ConfigurationError: ``concurrency`` is below 1, a weight is not a positive integer,
                ``queue_concurrency`` names a queue the worker does not consume or caps one below 1,
                or ``queue_metrics_interval`` is not positive.
        """
        from cloudjobs.runtimes.worker import Worker

        return Worker(
            self,
            queues=queues,
            concurrency=concurrency,
            queue_concurrency=queue_concurrency,
            prefetch=prefetch,
            shutdown_timeout=as_timedelta(shutdown_timeout, name="shutdown_timeout"),
            queue_metrics_interval=as_timedelta(queue_metrics_interval, name="queue_metrics_interval"),
            stall_timeout=as_timedelta(stall_timeout, name="stall_timeout"),
            health_port=health_port,
            health_address=health_address,
        )

    def lambda_handler(
        self,
        *,
        fifo_rule: FifoRule | None = None,
        safety_margin: timedelta | float | None = None,
        concurrency: int = 1,
    ) -> LambdaHandler:
        """The handler of a Lambda function behind an SQS event source mapping.

        ``handler(event, context)`` runs the batch through the consumer core and returns
        ``{"batchItemFailures": [...]}`` (turn on ``ReportBatchItemFailures``). Each record runs on
        the queue its ``eventSourceARN`` names: one of the app's queues, or, on SQS, any queue (no
        ``CLOUDJOBS_QUEUE_URL`` is needed to consume). Build it at module level; building does no
        I/O. See docs/lambda.md.

        Args:
            fifo_rule: on FIFO queues, what a failure holds back: the rest of its message group
                (``FifoRule.PER_GROUP``, the default) or the rest of the batch
                (``FifoRule.STOP_AT_FIRST_FAILURE``, AWS's documented rule).
            safety_margin: seconds or timedelta that must remain of the invocation for a record to
                start (default 5 s); records not started are reported and released.
            concurrency: records run at once within a batch, in threads (FIFO groups stay in order).

        Raises:
            ConfigurationError: ``concurrency`` is below 1 or ``safety_margin`` is negative.
        """
        from cloudjobs.runtimes.aws_lambda import DEFAULT_SAFETY_MARGIN, FifoRule, LambdaHandler

        return LambdaHandler(
            self,
            fifo_rule=fifo_rule or FifoRule.PER_GROUP,
            safety_margin=as_timedelta(safety_margin, name="safety_margin") or DEFAULT_SAFETY_MARGIN,
            concurrency=concurrency,
        )

    # -- testing ----------------------------------------------------------------------------------

    def drain(
        self, *, max_jobs: int = 10_000, skip_delays: bool = True, until: datetime | timedelta | None = None
    ) -> DrainReport:
        """Run everything enqueued on the memory backends to completion, in this thread: every
        queue of the app, until none holds anything runnable.

        Retries and delays are skipped over by moving the memory queue's time forward
        (``skip_delays=False`` runs only what is visible now). For tests.

        With ``until`` (a time on the default memory queue's clock, or a duration from its current
        time), time moves on only that far, and the app's schedules fire too: time stops at each
        tick on the way, a scheduler on the app's store fires it, and its job runs. The queue's
        time ends at ``until``, so a later ``drain(until=...)`` goes on from there.

        Raises:
            ConfigurationError: the backend is not a :class:`MemoryBackend`.
            InvalidScheduleError: as :meth:`scheduler`, when schedules fire.
        """
        from cloudjobs.runtimes.drain import drain_queues

        lanes = []
        for name in self.queue_names:
            backend = self.backend_of(name)
            if not is_memory_backend(backend):
                raise ConfigurationError("drain() runs on the memory backend; use jobs.testing() in tests")
            lanes.append((self.consumer_on(backend), backend))
        if until is None:
            return drain_queues(lanes, max_jobs=max_jobs, skip_delays=skip_delays)
        deadline = lanes[0][1].now() + until if isinstance(until, timedelta) else until
        scheduler = self.scheduler() if self._schedules.all() else None
        return drain_queues(
            lanes, max_jobs=max_jobs, skip_delays=skip_delays, until=deadline, scheduler=scheduler
        )

    @contextlib.contextmanager
    def testing(self, backend: MemoryBackend | None = None) -> Iterator[MemoryBackend]:
        """Swap in a fresh :class:`MemoryBackend` for the default queue and one for each named
        queue (and default settings, and a memory idempotency store unless one was given) for the
        ``with`` block; yields the default queue's (``jobs.backend_of(name)`` gives the others).

        A named queue's memory backend takes the SQS queue name its configuration stands for (a
        ``.fifo`` name makes a FIFO queue); named queues given as backends are kept.
        """
        from cloudjobs.backends.memory import MemoryBackend

        memory = backend if backend is not None else MemoryBackend(clock=self._clock)
        saved_backend, saved_settings, saved_store = self._backend, self._settings, self._idempotency_store
        saved_named, saved_limiter = dict(self._named_backends), self._limiter
        self._limiter = None  # limits are counted beside the store: a fresh one for the block
        if self._settings is None:
            self._settings = load_settings(dotenv=False)
        self._backend = memory
        for name, value in self._named_queue_config().items():
            if isinstance(value, str):
                self._named_backends[name] = memory.sibling(queue_name_of(value))
        if self._idempotency_store is None:
            from cloudjobs.idempotency.memory import MemoryIdempotencyStore

            self._idempotency_store = MemoryIdempotencyStore(clock=self._clock)
        saved_payloads = self._payload_store
        if self._payload_store is None and self._settings.payload_bucket:
            from cloudjobs.payloads.store import MemoryPayloadStore

            self._payload_store = MemoryPayloadStore(self._settings.payload_bucket)
        try:
            yield memory
        finally:
            self._backend, self._settings = saved_backend, saved_settings
            self._idempotency_store = saved_store
            self._named_backends, self._limiter = saved_named, saved_limiter
            self._payload_store = saved_payloads


def _check_name(name: str) -> None:
    try:
        check_queue_name(name)
    except ValueError as exc:
        raise ConfigurationError(str(exc), setting="queue") from None

"""The consumer core: one delivery in, one Outcome out; shared by every runtime.

The pipeline, stage by stage::

    decode → look up the job → validate the payload → middleware.before_run (cancellation,
    idempotency lease) → run the handler with its timeout → middleware.after_run → Outcome

A deferral (``Deferred``: not run now, not an attempt) still spends one of the queue's receives; near
the redrive threshold the consumer asks for the message to be re-sent instead (same job id and
attempt offset), so a job that keeps being deferred never reaches the dead-letter queue that way.

Runtimes only translate: they turn what they received into :class:`Delivery` values and apply the
outcome (delete, change visibility, dead-letter). Retry and dead-letter policy live here and in
:mod:`cloudjobs.retry`, so the ECS worker and the Lambda adapter behave alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from cloudjobs.backends.base import MAX_DELAY, MAX_VISIBILITY, Delivery, OutgoingMessage, QueueInfo
from cloudjobs.definition import JobDefinition
from cloudjobs.envelope import (
    CORRELATION_ATTRIBUTE,
    TYPE_ATTRIBUTE,
    Envelope,
    ForeignMessageError,
    decode,
    encode,
)
from cloudjobs.errors import (
    DecodeError,
    JobTimeoutError,
    MessageError,
    PermanentError,
    RetryableError,
    UnknownJobError,
)
from cloudjobs.job import Job, reset_current_job, set_current_job
from cloudjobs.outcomes import Cancelled, Completed, DeadLetter, Deferred, Outcome, Retry
from cloudjobs.retry import RetryPolicy
from cloudjobs.settings import Settings
from cloudjobs.telemetry.spans import RunTrace, Telemetry, default_telemetry

logger = logging.getLogger("cloudjobs.consumer")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A delivery that decoded and validated: ready to run.

    Attributes:
        delivery: the message as received.
        envelope: its decoded envelope.
        definition: the job's registration.
        payload: the validated payload, of the handler's payload type.
        job: what the handler is told about its job.
        policy: the retry policy in force for this job.
        trace: the job's CONSUMER span and metrics (current while the handler runs; ended by settle).
    """

    delivery: Delivery
    envelope: Envelope
    definition: JobDefinition
    payload: Any
    job: Job
    policy: RetryPolicy
    trace: RunTrace | None = field(default=None, compare=False, repr=False)


class ConsumerMiddleware(Protocol):
    """A hook around the handler call (idempotency, cancellation, telemetry plug in here)."""

    def before_run(self, prepared: Prepared) -> Outcome | None:
        """Return an outcome to skip the handler (e.g. a stored result), or None to run it."""
        ...

    def after_run(self, prepared: Prepared, outcome: Outcome) -> Outcome:
        """See, and possibly replace, the outcome of a handler run."""
        ...


@runtime_checkable
class LeaseMiddleware(ConsumerMiddleware, Protocol):
    """A middleware that holds something for the length of a run (the idempotency lease).

    Optional on top of :class:`ConsumerMiddleware`: the consumer calls these methods on the
    middleware that have them.
    """

    def renew(self, prepared: Prepared) -> None:
        """Extend what the run holds (called on the visibility heartbeat while the handler runs)."""
        ...

    def record_progress(self, job: Job, percent: int) -> None:
        """Record a running job's progress (``job.progress(n)``)."""
        ...

    def after_timeout(self, prepared: Prepared, outcome: Outcome) -> Outcome:
        """Like ``after_run``, for a sync handler past its timeout whose thread still runs."""
        ...

    def after_late_return(self, prepared: Prepared, *, result: object, error: BaseException | None) -> None:
        """The thread of a timed-out sync handler ended, returning ``result`` or raising ``error``."""
        ...


class Consumer:
    """Decides one outcome per delivery.

    Args:
        registry: job type → definition.
        settings: defaults for attempts, timeouts, backoff and foreign-message routing.
        queue: the queue's configuration (its maxReceiveCount bounds the attempts).
        random: source of jitter in ``[0, 1)`` (injectable for tests).
        middleware: hooks around the handler, in order.
        telemetry: spans and metrics of each run (default: on, through the global providers).
    """

    def __init__(
        self,
        *,
        registry: Mapping[str, JobDefinition],
        settings: Settings,
        queue: QueueInfo,
        random: Callable[[], float] | None = None,
        middleware: Sequence[ConsumerMiddleware] = (),
        telemetry: Telemetry | None = None,
    ) -> None:
        self._telemetry = telemetry or default_telemetry()
        self._registry = registry
        self._settings = settings
        self._queue = queue
        self._middleware = tuple(middleware)
        self._lease_middleware = tuple(m for m in self._middleware if isinstance(m, LeaseMiddleware))
        self._policies: dict[str, RetryPolicy] = {}
        extra = {} if random is None else {"random": random}
        self._default_policy = RetryPolicy(
            max_attempts=settings.max_attempts,
            base=timedelta(seconds=settings.backoff_base_seconds),
            cap=timedelta(seconds=settings.backoff_cap_seconds),
            **extra,
        )
        for definition in registry.values():
            policy = definition.retry or RetryPolicy(
                max_attempts=definition.max_attempts or settings.max_attempts,
                base=self._default_policy.base,
                cap=self._default_policy.cap,
                random=self._default_policy.random,
            )
            self._policies[definition.name] = policy
            if queue.max_receive_count is not None and policy.max_attempts > queue.max_receive_count:
                logger.warning(
                    "job %r allows %d attempts but queue %r redrives after %d receives: "
                    "it will be dead-lettered (reason max_receives) after %d attempts",
                    definition.name,
                    policy.max_attempts,
                    queue.name,
                    queue.max_receive_count,
                    queue.max_receive_count,
                )

    @property
    def queue(self) -> QueueInfo:
        """The configuration of the queue this consumer reads."""
        return self._queue

    def timeout_of(self, definition: JobDefinition) -> timedelta:
        """The time limit of a job's handler."""
        return definition.timeout or self._settings.job_timeout

    def prepare(self, delivery: Delivery) -> Prepared | Outcome:
        """Decode, look up and validate a delivery, then run the middleware's ``before_run``.

        Returns the prepared job, or the outcome when it must not run (undecodable, unknown
        type, invalid payload, or a middleware's decision). The delivery's CONSUMER span starts
        here: it ends here with such an outcome, else in :meth:`settle`.
        """
        trace = self._telemetry.start_run(delivery, self._queue)
        prepared = self._prepare(delivery, trace)
        if not isinstance(prepared, Prepared):
            trace.finish(prepared)
        return prepared

    def _prepare(self, delivery: Delivery, trace: RunTrace) -> Prepared | Outcome:
        try:
            envelope = self._decode(delivery)
        except DecodeError as exc:
            return DeadLetter(
                reason=exc.reason,
                error=str(exc),
                attempt=delivery.receive_count,
                job_type=_attribute(delivery, TYPE_ATTRIBUTE),
            )
        attempt = max(1, delivery.receive_count - envelope.attempt_offset)
        definition = self._registry.get(envelope.type)
        if definition is None:
            # A rolling deploy may bring the handler: retry with backoff, dead-letter at the end.
            error = UnknownJobError(job_name=envelope.type)
            return self._failure(
                delivery, envelope.type, attempt, self._default_policy, error, exhausted=error.reason
            )
        policy = self._policies[definition.name]
        try:
            payload = definition.validate(envelope.payload)
        except MessageError as exc:
            return DeadLetter(reason=exc.reason, error=str(exc), attempt=attempt, job_type=envelope.type)
        job = Job(
            id=envelope.id,
            type=envelope.type,
            attempt=attempt,
            max_attempts=policy.max_attempts,
            enqueued_at=envelope.enqueued_at,
            correlation_id=envelope.correlation_id,
            queue=delivery.queue,
            timeout=self.timeout_of(definition),
            idempotency_key=definition.idempotency_key_of(
                job_id=envelope.id, producer_key=envelope.idempotency_key, payload=payload
            ),
            message=delivery,
            envelope=envelope,
            progress_reporter=self._record_progress if definition.has_record else None,
        )
        trace.identify(job)
        prepared = Prepared(delivery, envelope, definition, payload, job, policy, trace)
        for middleware in self._middleware:
            decided = middleware.before_run(prepared)
            if decided is not None:
                return self._requeue_if_near_redrive(delivery, envelope, decided)
        return prepared

    def call(self, prepared: Prepared) -> object:
        """Run a sync handler in this thread, with its Job as the current one (no timeout here)."""
        token = set_current_job(prepared.job)
        try:
            with prepared.trace or _UNTRACED:
                return prepared.definition.function(*self._arguments(prepared))
        finally:
            reset_current_job(token)

    async def call_async(self, prepared: Prepared) -> object:
        """Run an async handler, cancelling it at its timeout (raises JobTimeoutError then)."""
        token = set_current_job(prepared.job)
        try:
            # Entered before wait_for: the handler's task copies this context, span included.
            with prepared.trace or _UNTRACED:
                return await asyncio.wait_for(
                    prepared.definition.function(*self._arguments(prepared)),
                    prepared.job.timeout.total_seconds(),
                )
        except TimeoutError:
            raise JobTimeoutError(job_name=prepared.definition.name, timeout=prepared.job.timeout) from None
        finally:
            reset_current_job(token)

    def settle(
        self,
        prepared: Prepared,
        *,
        result: object = None,
        error: BaseException | None = None,
        is_still_running: bool = False,
    ) -> Outcome:
        """The outcome of a handler run that returned ``result`` or raised ``error``.

        ``is_still_running``: a sync handler passed its timeout and its thread runs on; what the run
        holds (its idempotency lease) is kept until :meth:`finish_late` is called.
        """
        outcome: Outcome
        job = prepared.job
        if error is None:
            outcome = Completed(result=result)
        elif isinstance(error, PermanentError | MessageError):
            reason = "permanent_error" if isinstance(error, PermanentError) else error.reason
            outcome = DeadLetter(
                reason=reason, error=_describe(error), attempt=job.attempt, job_type=job.type
            )
        else:
            outcome = self._failure(prepared.delivery, job.type, job.attempt, prepared.policy, error)
        if job.cancelled:
            # A cancellation the run learnt of wins: no retry, no DLQ, whatever the handler did.
            outcome = Cancelled()
        for middleware in reversed(self._middleware):
            if is_still_running and isinstance(middleware, LeaseMiddleware):
                outcome = middleware.after_timeout(prepared, outcome)
            else:
                outcome = middleware.after_run(prepared, outcome)
        if prepared.trace is not None:
            prepared.trace.finish(outcome, error)
        return outcome

    def finish_late(
        self, prepared: Prepared, *, result: object = None, error: BaseException | None = None
    ) -> None:
        """The thread of a handler settled by its timeout ended: release what the run still holds."""
        for middleware in reversed(self._lease_middleware):
            middleware.after_late_return(prepared, result=result, error=error)

    def renew(self, prepared: Prepared) -> None:
        """Extend what a running job holds (its idempotency lease); runtimes call it on their heartbeat."""
        for middleware in self._lease_middleware:
            middleware.renew(prepared)

    @property
    def holds_leases(self) -> bool:
        """True when some middleware holds something per run that :meth:`renew` must extend."""
        return bool(self._lease_middleware)

    def process(self, delivery: Delivery) -> Outcome:
        """Run a delivery to its outcome in this thread (async handlers on a private event loop).

        Sync handlers run inline with no timeout enforcement; the worker enforces it.
        """
        prepared = self.prepare(delivery)
        if not isinstance(prepared, Prepared):
            return prepared
        try:
            if prepared.definition.is_async:
                result = asyncio.run(self.call_async(prepared))
            else:
                result = self.call(prepared)
        except Exception as exc:
            logger.info("job %s (%s) failed: %s", prepared.job.id, prepared.job.type, _describe(exc))
            return self.settle(prepared, error=exc)
        return self.settle(prepared, result=result)

    def _decode(self, delivery: Delivery) -> Envelope:
        try:
            return decode(delivery.body)
        except ForeignMessageError as foreign:
            job_type = self._route(delivery)
            if job_type is None:
                raise DecodeError(
                    f"{foreign}; no routing rule applies (set CLOUDJOBS_DEFAULT_JOB_TYPE or "
                    "CLOUDJOBS_JOB_TYPE_ATTRIBUTE)",
                    reason="unroutable",
                ) from None
            return Envelope(
                id=delivery.message_id,
                type=job_type,
                payload=foreign.content,
                correlation_id=_attribute(delivery, CORRELATION_ATTRIBUTE) or uuid.uuid4().hex,
                enqueued_at=delivery.sent_at,
            )

    def _route(self, delivery: Delivery) -> str | None:
        if self._settings.job_type_attribute:
            routed = _attribute(delivery, self._settings.job_type_attribute)
            if routed:
                return routed
        return self._settings.default_job_type

    def _failure(
        self,
        delivery: Delivery,
        job_type: str,
        attempt: int,
        policy: RetryPolicy,
        error: BaseException,
        *,
        exhausted: str = "max_attempts",
    ) -> Outcome:
        description = _describe(error)
        if policy.is_exhausted(attempt):
            return DeadLetter(reason=exhausted, error=description, attempt=attempt, job_type=job_type)
        limit = self._queue.max_receive_count
        if limit is not None and delivery.receive_count >= limit:
            # The queue would redrive it on the next receive without saying why: send it ourselves.
            reason = exhausted if exhausted != "max_attempts" else "max_receives"
            return DeadLetter(reason=reason, error=description, attempt=attempt, job_type=job_type)
        if isinstance(error, RetryableError) and error.delay is not None:
            delay = min(max(error.delay, timedelta(0)), MAX_VISIBILITY)
        else:
            delay = policy.backoff(attempt)
        return Retry(delay=delay, error=description, attempt=attempt)

    def _record_progress(self, job: Job, percent: int) -> None:
        for middleware in self._lease_middleware:
            middleware.record_progress(job, percent)

    def _requeue_if_near_redrive(self, delivery: Delivery, envelope: Envelope, outcome: Outcome) -> Outcome:
        """A deferral must not spend the queue's receives: near the redrive threshold, send a copy."""
        limit = self._queue.max_receive_count
        if not isinstance(outcome, Deferred) or limit is None or delivery.receive_count < limit - 1:
            return outcome
        # Same job id and attempt offset; the copy's receive count starts again from zero.
        message = OutgoingMessage(
            body=encode(envelope),
            attributes=dict(delivery.attributes),
            delay=timedelta(0) if self._queue.is_fifo else min(outcome.delay, MAX_DELAY),
            group_id=delivery.group_id,
            deduplication_id=f"{envelope.id[:64]}-{uuid.uuid4().hex}" if self._queue.is_fifo else None,
            system_attributes=delivery.system_attributes,
        )
        return Deferred(delay=outcome.delay, reason=outcome.reason, requeue=message)

    @staticmethod
    def _arguments(prepared: Prepared) -> tuple[Any, ...]:
        if prepared.definition.takes_job:
            return (prepared.payload, prepared.job)
        return (prepared.payload,)


_UNTRACED = contextlib.nullcontext()


def _attribute(delivery: Delivery, name: str) -> str | None:
    # Senders spell attribute names differently; match them case-insensitively.
    wanted = name.lower()
    for key, value in delivery.attributes.items():
        if key.lower() == wanted:
            return value
    return None


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__

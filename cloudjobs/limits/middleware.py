"""LimitMiddleware: the consumer-side stage of rate and concurrency limits.

Around each run of a job type registered with limits::

    before_run: key = limit_key(payload)
                concurrency → acquire a slot ─┬─ Slot      → go on, holding it
                                              └─ SlotsFull → Deferred (concurrency_limited)
                rate        → take a start  ──┬─ Granted   → run the handler
                                              └─ Exceeded  → give the slot back; Deferred (rate_limited)
                store unreachable                          → Deferred (limiter_unavailable; fail closed)
    renew (heartbeat):   extends the slot's lease
    settle / settle_late: gives the slot back, whatever the outcome (a sync handler past its
                         timeout keeps it until its thread returns)

The slot is taken before the start so that a full job type spends none of its rate budget. A
deferral is not an attempt: a job on its first attempt is re-sent (a copy with the same job id, its
receive count starting again from zero) to come back when capacity is expected, so deferrals never
count towards its attempts or the queue's redrive threshold. On a FIFO queue (no per-message delay)
and for a retry (which must keep its attempt number) the message is hidden instead; the consumer
re-sends it before its receives reach the redrive threshold.

This middleware sits before the idempotency middleware: a deferred job takes no lease and leaves
its status record alone.
"""

from __future__ import annotations

import logging
import math
import random as random_module
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Final

from cloudjobs.backends.base import MAX_DELAY, MAX_VISIBILITY, Backend
from cloudjobs.backends.memory import MemoryBackend
from cloudjobs.clock import Clock
from cloudjobs.definition import JobDefinition
from cloudjobs.errors import ConfigurationError, IdempotencyError
from cloudjobs.hops import resend_copy
from cloudjobs.idempotency.base import IdempotencyStore
from cloudjobs.limits.base import (
    Granted,
    Limiter,
    RateExceeded,
    Slot,
    SlotsFull,
    concurrency_key,
    rate_key,
)
from cloudjobs.middleware import RunHandle
from cloudjobs.outcomes import DeadLetter, Deferred, Outcome, Reason
from cloudjobs.run import Prepared, Run
from cloudjobs.settings import SettingsModel
from cloudjobs.telemetry.metrics import JOB_TYPE_KEY, LIMIT_KIND_KEY, limit_metrics

logger = logging.getLogger("cloudjobs.limits")

SLOT_POLL: Final = timedelta(seconds=1)
"""How soon a job whose slots are all held looks again (a slot is freed when any run ends)."""
JITTER: Final = timedelta(seconds=1)
"""Up to this much is added to each deferral, so that deferred jobs do not all come back at once."""
STORE_DOWN_DEFERRAL: Final = timedelta(seconds=5)
"""How long a limited job waits when the limits' store cannot be reached."""


class LimitMiddleware:
    """Takes, renews and gives back limits around runs of limited job types (see the module docstring).

    Args:
        limiter: where limits are counted.
        lease: how long a concurrency slot lasts unless renewed (renewed on the heartbeat).
        clock: the time deferrals are computed from (the limiter's own clock).
        is_fifo: the queue is FIFO (no re-sent copies with a delay).
        random: jitter source in ``[0, 1)``.
        is_metered: count deferrals (``cloudjobs.limit.deferred``).
    """

    def __init__(
        self,
        limiter: Limiter,
        *,
        lease: timedelta,
        clock: Clock,
        is_fifo: bool = False,
        random: Callable[[], float] | None = None,
        is_metered: bool = True,
    ) -> None:
        self.limiter = limiter
        self.lease = lease
        self._clock = clock
        self._is_fifo = is_fifo
        self._random = random or random_module.random
        self._is_metered = is_metered

    def start(self, run: Run) -> RunHandle:
        """A handle that holds this run's slot, once it took one."""
        return _LimitRun(self)

    def defer(self, prepared: Prepared, until: datetime, reason: Reason, kind: str) -> Deferred:
        """The deferral of a job until ``until`` (plus jitter; whole seconds, at least one)."""
        wait = (until - self._clock.now()).total_seconds() + self._random() * JITTER.total_seconds()
        delay = min(timedelta(seconds=max(1, math.ceil(wait))), MAX_VISIBILITY)
        job = prepared.job
        if self._is_metered:
            limit_metrics().deferred.add(1, {JOB_TYPE_KEY: job.type, LIMIT_KIND_KEY: kind})
        logger.debug(
            "job %s (%s) deferred %ss by its %s limit",
            job.id,
            job.type,
            delay.total_seconds(),
            kind,
            extra={"job_id": job.id, "job_type": job.type, "limit": kind},
        )
        if job.attempt > 1 or self._is_fifo:
            return Deferred(delay=delay, reason=reason)
        # A copy whose receive count starts from zero: the deferral spends none of the job's attempts.
        # SQS delays a message by 900 s at most: a longer wait is deferred again when it comes back.
        copy = resend_copy(prepared.delivery, prepared.envelope, min(delay, MAX_DELAY))
        return Deferred(delay=delay, reason=reason, requeue=copy)

    def now(self) -> datetime:
        """The limiter's current time."""
        return self._clock.now()


class _LimitRun(RunHandle):
    """One run's limits: a slot taken before the handler, renewed on the heartbeat, given back after."""

    __slots__ = ("_key", "_middleware", "_token")

    def __init__(self, middleware: LimitMiddleware) -> None:
        self._middleware = middleware
        self._key: str | None = None
        self._token = ""

    def before_run(self, run: Run) -> Outcome | None:
        """Take a slot and a start, or defer the job."""
        prepared = run.prepared
        assert prepared is not None
        limits = prepared.definition.limits
        if limits is None:
            return None
        job, middleware = prepared.job, self._middleware
        try:
            key = limits.key(prepared.payload)
        except Exception as exc:
            return DeadLetter(
                reason=Reason.INVALID_PAYLOAD,
                error=f"the limit key cannot be derived from the payload: {type(exc).__name__}: {exc}",
                attempt=job.attempt,
                job_type=job.type,
                job_id=job.id,
            )
        try:
            if limits.concurrency is not None:
                slot_key = concurrency_key(job.type, key)
                lease = run.lease_limit or middleware.lease
                match middleware.limiter.acquire(slot_key, limits.concurrency, lease=lease):
                    case Slot(token=token):
                        self._key, self._token = slot_key, token
                        logger.debug(
                            "job %s (%s): concurrency slot taken",
                            job.id,
                            job.type,
                            extra={"job_id": job.id, "job_type": job.type, "limit": "concurrency"},
                        )
                    case SlotsFull(lapses_at=lapses_at):
                        until = min(lapses_at, middleware.now() + SLOT_POLL)
                        return middleware.defer(prepared, until, Reason.CONCURRENCY_LIMITED, "concurrency")
            if limits.rate is not None:
                match middleware.limiter.take(rate_key(job.type, key), limits.rate):
                    case Granted():
                        logger.debug(
                            "job %s (%s): rate start granted",
                            job.id,
                            job.type,
                            extra={"job_id": job.id, "job_type": job.type, "limit": "rate"},
                        )
                    case RateExceeded(retry_at=retry_at):
                        self._give_back()
                        return middleware.defer(prepared, retry_at, Reason.RATE_LIMITED, "rate")
        except IdempotencyError as exc:
            # Fail closed: without the count there is no telling whether the job may start.
            self._give_back()
            logger.warning("job %s deferred: the limits' store is unavailable: %s", job.id, exc)
            until = middleware.now() + STORE_DOWN_DEFERRAL
            return middleware.defer(prepared, until, Reason.LIMITER_UNAVAILABLE, "unavailable")
        return None

    def renew(self, run: Run) -> None:
        """Extend the slot's lease (the visibility heartbeat)."""
        if self._key is None:
            return
        try:
            held = self._middleware.limiter.renew(self._key, self._token, lease=self._middleware.lease)
        except IdempotencyError as exc:
            logger.warning("renewing the concurrency slot on %r failed: %s", self._key, exc)
            return
        if not held:
            # Its lease lapsed (the heartbeat ran too late) and another run may hold it now.
            logger.warning("the concurrency slot on %r lapsed while its job ran", self._key)

    def settle(self, run: Run, outcome: Outcome) -> Outcome:
        """Give the slot back, unless a sync handler past its timeout still runs."""
        if not run.is_still_running:
            self._give_back()
        return outcome

    def settle_late(self, run: Run, *, result: object, error: BaseException | None) -> None:
        """The thread of a timed-out handler ended: give its slot back."""
        self._give_back()

    def _give_back(self) -> None:
        if self._key is None:
            return
        key, self._key = self._key, None
        try:
            self._middleware.limiter.release(key, self._token)
        except IdempotencyError as exc:
            # The lease lapses by itself; the outcome stands.
            logger.warning("giving back the concurrency slot on %r failed: %s", key, exc)


def limit_middleware(
    registry: Mapping[str, JobDefinition],
    settings: SettingsModel,
    *,
    backend: Backend,
    is_fifo: bool,
    queue_visibility: timedelta,
    limiter: Callable[[Clock], Limiter],
    clock: Clock,
    random: Callable[[], float] | None,
    is_metered: bool,
) -> list[LimitMiddleware]:
    """The limits stage for a consumer, when a registered job type has limits (else none).

    Args:
        registry: job type → definition.
        settings: the settings in force (the visibility timeout and heartbeat set the slot lease).
        backend: the queue consumed (a memory queue's time is the limiter's clock in tests).
        is_fifo: the queue is FIFO.
        queue_visibility: the queue's own visibility timeout.
        limiter: gives the app's limiter, built on first call with the given clock.
        clock: the app's clock.
        random: jitter source.
        is_metered: count deferrals.
    """
    if not any(definition.limits is not None for definition in registry.values()):
        return []
    from cloudjobs.idempotency.middleware import lease_for

    time = backend if isinstance(backend, MemoryBackend) else clock
    visibility = (
        timedelta(seconds=settings.visibility_timeout_seconds)
        if settings.visibility_timeout_seconds
        else queue_visibility
    )
    return [
        LimitMiddleware(
            limiter(time),
            # Like the idempotency lease: renewed on the heartbeat, late by one interval still in time.
            lease=lease_for(visibility, settings.heartbeat_interval(visibility)),
            clock=time,
            is_fifo=is_fifo,
            random=random,
            is_metered=is_metered,
        )
    ]


def build_limiter(store: IdempotencyStore, clock: Clock) -> Limiter:
    """The limiter beside an idempotency store: on its DynamoDB table, or in memory for a memory store.

    Raises:
        ConfigurationError: the store is of another kind.
    """
    from cloudjobs.idempotency.memory import MemoryIdempotencyStore

    if isinstance(store, MemoryIdempotencyStore):
        from cloudjobs.limits.memory import MemoryLimiter

        return MemoryLimiter(clock=clock)
    # A DynamoDB store's module is loaded if the store is one; never load boto3 for a memory store.
    dynamodb = sys.modules.get("cloudjobs.idempotency.dynamodb")
    if dynamodb is not None and isinstance(store, dynamodb.DynamoDbIdempotencyStore):
        from cloudjobs.limits.dynamodb import DynamoDbLimiter

        table_store = store
        return DynamoDbLimiter(table_store.table, client=lambda: table_store.client)
    raise ConfigurationError(
        f"rate and concurrency limits live beside the idempotency records, in a DynamoDB or memory "
        f"store; {type(store).__name__} keeps none",
        setting="idempotency_store",
    )

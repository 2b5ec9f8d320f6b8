"""IdempotencyMiddleware: the consumer-side flow of effectively-once processing and job status.

Around each run of a job that keeps a record (``idempotent=True``, ``idempotency_key=...`` or
``track_status=True`` at registration, or a job enqueued with ``track_status=True``)::

    before_run: acquire ─┬─ Acquired          → run the handler, holding the lease
                         ├─ AlreadyCompleted  → Completed(stored result), handler not run
                         ├─ InProgress        → Deferred until the lease may lapse (not an attempt)
                         ├─ PayloadMismatch   → DeadLetter("idempotency_key_reused")
                         ├─ CancelRequested   → Cancelled (acknowledged, never run)
                         └─ store unreachable → Deferred (fail closed: not run, not deleted)
    renew (heartbeat):   extends the lease; its answer sets ``job.cancelled`` on a cancellation request
    settle:     Completed → complete(result) · Cancelled → finish_cancelled · other → release(error)

The consumer acknowledges a completed message only after ``complete`` returned: a crash in between
redelivers the message, and the next delivery re-runs the handler once the lease lapses (that is the
crash window :doc:`docs/idempotency.md` describes). Jobs with ``track_status=True`` alone keep the
record for status but are not deduplicated: on a conflict they run without touching it, and a store
failure does not stop them. The jobs of a flow (see :mod:`cloudjobs.flows`) are deduplicated whatever
their registration says: a parent has two messages, and a child's record holds the result its parent
reads.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Final

from cloudjobs.backends.base import MAX_VISIBILITY
from cloudjobs.clock import Clock, SystemClock
from cloudjobs.errors import IdempotencyError, IdempotencyKeyReusedError
from cloudjobs.idempotency.base import (
    DEFAULT_RETENTION,
    MAX_RESULT_BYTES,
    RESULT_BYTES_CEILING,
    Acquired,
    AlreadyCompleted,
    CancelRequested,
    Claim,
    IdempotencyStore,
    InProgress,
    JobControlStore,
    PayloadMismatch,
    decode_result,
    encode_result,
    payload_hash,
    store_key,
)
from cloudjobs.job import Job
from cloudjobs.middleware import RunHandle
from cloudjobs.outcomes import Cancelled, Completed, DeadLetter, Deferred, Outcome, Reason, Released, Retry
from cloudjobs.run import Run
from cloudjobs.telemetry.attributes import trace_id_of

logger = logging.getLogger("cloudjobs.idempotency")

_MIN_DEFERRAL: Final = timedelta(seconds=1)
_STORE_DOWN_DEFERRAL: Final = timedelta(seconds=5)


def lease_for(visibility: timedelta, heartbeat_interval: timedelta) -> timedelta:
    """The idempotency lease for a visibility timeout and its heartbeat.

    Both come from one setting (the visibility timeout; the heartbeat is a third of it unless set),
    and the lease is renewed on the same heartbeat, so it is the visibility timeout but never less
    than three heartbeat intervals: a heartbeat that runs one interval late still renews in time.
    """
    return max(visibility, 3 * heartbeat_interval)


class IdempotencyMiddleware:
    """Takes, renews and settles idempotency leases around handler runs (see the module docstring).

    Args:
        store: the idempotency store.
        lease: how long a lease lasts unless renewed (see :func:`lease_for`).
        retention: how long records are kept after their last write.
        max_result_bytes: the largest result JSON stored (at most 350,000 bytes: DynamoDB's 400 KB item
            limit, attributes included).
        clock: the time source deferrals are computed with (the store's own clock in tests).
        store_down_deferral: how long a message waits when the store cannot be reached.
    """

    def __init__(
        self,
        store: IdempotencyStore,
        *,
        lease: timedelta,
        retention: timedelta = DEFAULT_RETENTION,
        max_result_bytes: int = MAX_RESULT_BYTES,
        clock: Clock | None = None,
        store_down_deferral: timedelta = _STORE_DOWN_DEFERRAL,
    ) -> None:
        if not 0 < max_result_bytes <= RESULT_BYTES_CEILING:
            raise ValueError(f"max_result_bytes must be 1 to {RESULT_BYTES_CEILING}")
        if retention <= lease:
            raise ValueError("retention must be longer than the lease")
        self.store = store
        self.lease = lease
        self.retention = retention
        self.max_result_bytes = max_result_bytes
        self._clock: Clock = clock or SystemClock()
        self._store_down_deferral = store_down_deferral

    def start(self, run: Run) -> RunHandle:
        """A handle that holds this run's lease, once it took one."""
        return _LeaseRun(self)

    @property
    def store_down_deferral(self) -> timedelta:
        """How long a message waits when the store cannot be reached."""
        return self._store_down_deferral

    def now(self) -> datetime:
        """The current time of the clock deferrals are computed with."""
        return self._clock.now()

    def settle(self, job: Job, key: str, token: str, outcome: Outcome) -> None:
        """Write what ``outcome`` means for the record under ``key``, held with ``token``."""
        match outcome:
            case Completed(result=result):
                encoded = encode_result(result, max_bytes=self.max_result_bytes)
                if encoded.omitted:
                    logger.warning("result of job %s not stored: %s", job.id, encoded.omitted)
                try:
                    self.store.complete(
                        key,
                        token,
                        result=encoded.json,
                        result_omitted=encoded.omitted,
                        retention=self.retention,
                    )
                except IdempotencyError as exc:
                    # The side effect happened: acknowledge anyway. Only a duplicate delivered after
                    # the lease lapses can run it again (the crash window, documented).
                    logger.error("completing the record of job %s failed: %s", job.id, exc)
            case DeadLetter(error=error):
                self.release(key, token, error, is_final=True)
            case Retry(error=error):
                self.release(key, token, error, is_final=False)
            case Deferred(reason=reason) | Released(reason=reason):
                self.release(key, token, f"not run: {reason}", is_final=False)
            case Cancelled():
                self._finish_cancelled(key, token)

    def release(self, key: str, token: str, error: str, *, is_final: bool) -> None:
        """Give the lease up after a run that did not complete (``is_final``: no retry follows)."""
        try:
            self.store.release(key, token, error=error, is_final=is_final)
        except IdempotencyError as exc:
            # The lease lapses by itself; the outcome (and the handler's own error) stands.
            logger.warning("releasing the lease on %r failed: %s", key, exc)

    def _finish_cancelled(self, key: str, token: str) -> None:
        if not isinstance(self.store, JobControlStore):
            self.release(key, token, "cancelled", is_final=True)
            return
        try:
            self.store.finish_cancelled(key, token)
        except IdempotencyError as exc:
            logger.warning("recording the cancellation on %r failed: %s", key, exc)


class _LeaseRun(RunHandle):
    """One run's lease: taken before the handler, renewed on the heartbeat, settled after."""

    __slots__ = ("_key", "_middleware", "_timed_out_outcome", "_token")

    def __init__(self, middleware: IdempotencyMiddleware) -> None:
        self._middleware = middleware
        self._key: str | None = None
        self._token = ""
        self._timed_out_outcome: Outcome | None = None

    def before_run(self, run: Run) -> Outcome | None:
        """Take the lease, or decide the outcome without running the handler."""
        assert run.prepared is not None
        prepared = run.prepared
        definition, job = prepared.definition, prepared.job
        has_record = definition.has_record or prepared.envelope.track_status
        if not has_record or job.idempotency_key is None:
            return None
        # A flow's jobs run once whatever their type says (see cloudjobs.flows): the parent has two
        # messages, and a child's record must hold the result its parent reads.
        envelope = prepared.envelope
        is_flow_job = envelope.flow_route is not None or envelope.flow_parent is not None
        is_deduplicated = definition.idempotent or is_flow_job
        middleware = self._middleware
        try:
            fingerprint = payload_hash(job.type, prepared.envelope.payload)
        except ValueError as exc:
            # NaN, infinities or lone surrogates: valid to the schema, but no record can hold them.
            return DeadLetter(
                reason=Reason.INVALID_PAYLOAD,
                error=f"the payload cannot be recorded: {type(exc).__name__}: {exc}",
                attempt=job.attempt,
                job_type=job.type,
                job_id=job.id,
            )
        claim = Claim(
            key=store_key(job.type, job.idempotency_key),
            job_id=job.id,
            job_type=job.type,
            payload_hash=fingerprint,
            correlation_id=job.correlation_id,
            trace_id=trace_id_of(run.delivery.attributes),
        )
        try:
            answer = middleware.store.acquire(
                claim, lease=run.lease_limit or middleware.lease, retention=middleware.retention
            )
        except IdempotencyError as exc:
            if not is_deduplicated:
                logger.warning("status record of job %s not written: %s", job.id, exc)
                return None
            # Fail closed: without the record there is no telling whether the job ran already.
            logger.warning("job %s deferred: idempotency store unavailable: %s", job.id, exc)
            return Deferred(delay=middleware.store_down_deferral, reason=Reason.IDEMPOTENCY_STORE_UNAVAILABLE)
        match answer:
            case Acquired(token=token):
                self._key, self._token = claim.key, token
                return None
            case CancelRequested():
                logger.info("job %s was cancelled: acknowledged without running", job.id)
                return Cancelled()
            case _ if not is_deduplicated:
                return None  # status only: at-least-once, the record stays the first run's
            case AlreadyCompleted(result=result):
                logger.info(
                    "job %s already completed under key %r: acknowledged", job.id, job.idempotency_key
                )
                return Completed(result=decode_result(result))
            case InProgress(available_at=available_at):
                delay = min(max(available_at - middleware.now(), _MIN_DEFERRAL), MAX_VISIBILITY)
                return Deferred(delay=delay, reason=Reason.LEASE_HELD)
            case PayloadMismatch(job_id=holder):
                error = IdempotencyKeyReusedError(key=job.idempotency_key, job_name=job.type, job_id=holder)
                return DeadLetter(
                    reason=error.reason,
                    error=str(error),
                    attempt=job.attempt,
                    job_type=job.type,
                    job_id=job.id,
                )
        raise AssertionError(f"unexpected answer {answer!r}")  # pragma: no cover

    def renew(self, run: Run) -> None:
        """Extend the lease of a running job (called on the visibility heartbeat)."""
        if self._key is None or run.prepared is None:
            return
        job = run.prepared.job
        try:
            renewal = self._middleware.store.renew(self._key, self._token, lease=self._middleware.lease)
        except IdempotencyError as exc:
            logger.warning("renewing the lease of job %s failed: %s", job.id, exc)
            return
        if renewal.is_cancel_requested and not job.cancelled:
            logger.info("job %s: cancellation requested", job.id)
            job.cancel_signal.set()

    def record_progress(self, run: Run, percent: int) -> None:
        """Write a running job's progress (renewing its lease on the way)."""
        if self._key is None or run.prepared is None:
            return
        job = run.prepared.job
        middleware = self._middleware
        try:
            renewal = middleware.store.renew(
                self._key, self._token, lease=run.lease_limit or middleware.lease, progress=percent
            )
        except IdempotencyError as exc:
            logger.warning("recording progress of job %s failed: %s", job.id, exc)
            return
        if renewal.is_cancel_requested:
            job.cancel_signal.set()

    def settle(self, run: Run, outcome: Outcome) -> Outcome:
        """Complete the record with the result, or release the lease after a failure; a sync
        handler past its timeout keeps its lease until its thread ends (:meth:`settle_late`)."""
        if self._key is None or run.prepared is None:
            return outcome
        if run.is_still_running:
            self._timed_out_outcome = outcome
            return outcome
        key, self._key = self._key, None
        self._middleware.settle(run.prepared.job, key, self._token, outcome)
        return outcome

    def settle_late(self, run: Run, *, result: object, error: BaseException | None) -> None:
        """The thread of a timed-out handler ended: complete the record if it succeeded, else release."""
        if self._key is None or run.prepared is None:
            return
        key, self._key = self._key, None
        job, middleware = run.prepared.job, self._middleware
        if job.cancelled:
            middleware.settle(job, key, self._token, Cancelled())
        elif error is None:
            middleware.settle(job, key, self._token, Completed(result=result))
        else:
            final = isinstance(self._timed_out_outcome, DeadLetter)
            middleware.release(key, self._token, f"{type(error).__name__}: {error}", is_final=final)

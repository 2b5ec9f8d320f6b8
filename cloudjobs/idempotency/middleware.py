"""IdempotencyMiddleware: the consumer-side flow of effectively-once processing and job status.

Around each run of a job that keeps a record (``idempotent=True``, ``idempotency_key=...`` or
``track_status=True``)::

    before_run: acquire ─┬─ Acquired          → run the handler, holding the lease
                         ├─ AlreadyCompleted  → Completed(stored result), handler not run
                         ├─ InProgress        → Deferred until the lease may lapse (not an attempt)
                         ├─ PayloadMismatch   → DeadLetter("idempotency_key_reused")
                         ├─ AlreadyCancelled  → Cancelled (acknowledged, never run)
                         └─ store unreachable → Deferred (fail closed: not run, not deleted)
    renew (heartbeat):   extends the lease; its answer sets ``job.cancelled`` on a cancellation request
    after_run:  Completed → complete(result) · Cancelled → finish_cancelled · other → release(error)

The consumer acknowledges a completed message only after ``complete`` returned: a crash in between
redelivers the message, and the next delivery re-runs the handler once the lease lapses (that is the
crash window :doc:`docs/idempotency.md` describes). Jobs with ``track_status=True`` alone keep the
record for status but are not deduplicated: on a conflict they run without touching it, and a store
failure does not stop them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from cloudjobs.backends.base import MAX_VISIBILITY
from cloudjobs.clock import Clock, SystemClock
from cloudjobs.consumer import Prepared
from cloudjobs.errors import IdempotencyError, IdempotencyKeyReusedError
from cloudjobs.idempotency.base import (
    DEFAULT_RETENTION,
    MAX_RESULT_BYTES,
    RESULT_BYTES_CEILING,
    Acquired,
    AlreadyCancelled,
    AlreadyCompleted,
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
from cloudjobs.outcomes import Cancelled, Completed, DeadLetter, Deferred, Outcome, Released, Retry
from cloudjobs.run_lease import lease_bound

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


@dataclass(slots=True)
class _Run:
    """A lease held for one delivery's run."""

    key: str
    token: str
    timed_out_outcome: Outcome | None = None


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
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    # -- ConsumerMiddleware -----------------------------------------------------------------------

    def before_run(self, prepared: Prepared) -> Outcome | None:
        """Take the lease, or decide the outcome without running the handler."""
        definition, job = prepared.definition, prepared.job
        if not definition.has_record or job.idempotency_key is None:
            return None
        claim = Claim(
            key=store_key(job.type, job.idempotency_key),
            job_id=job.id,
            job_type=job.type,
            payload_hash=payload_hash(job.type, prepared.envelope.payload),
        )
        try:
            answer = self.store.acquire(claim, lease=lease_bound() or self.lease, retention=self.retention)
        except IdempotencyError as exc:
            if not definition.idempotent:
                logger.warning("status record of job %s not written: %s", job.id, exc)
                return None
            # Fail closed: without the record there is no telling whether the job ran already.
            logger.warning("job %s deferred: idempotency store unavailable: %s", job.id, exc)
            return Deferred(delay=self._store_down_deferral, reason="idempotency_store_unavailable")
        match answer:
            case Acquired(token=token):
                with self._lock:
                    self._runs[prepared.delivery.receipt] = _Run(claim.key, token)
                return None
            case AlreadyCancelled():
                logger.info("job %s was cancelled: acknowledged without running", job.id)
                return Cancelled()
            case _ if not definition.idempotent:
                return None  # status only: at-least-once, the record stays the first run's
            case AlreadyCompleted(result=result):
                logger.info(
                    "job %s already completed under key %r: acknowledged", job.id, job.idempotency_key
                )
                return Completed(result=decode_result(result))
            case InProgress(available_at=available_at):
                delay = min(max(available_at - self._clock.now(), _MIN_DEFERRAL), MAX_VISIBILITY)
                return Deferred(delay=delay, reason="lease_held")
            case PayloadMismatch(job_id=holder):
                error = IdempotencyKeyReusedError(key=job.idempotency_key, job_name=job.type, job_id=holder)
                return DeadLetter(
                    reason=error.reason, error=str(error), attempt=job.attempt, job_type=job.type
                )
        raise AssertionError(f"unexpected answer {answer!r}")  # pragma: no cover

    def after_run(self, prepared: Prepared, outcome: Outcome) -> Outcome:
        """Complete the record with the result, or release the lease after a failure."""
        run = self._pop(prepared)
        if run is None:
            return outcome
        self._settle(prepared.job, run, outcome)
        return outcome

    # -- LeaseMiddleware --------------------------------------------------------------------------

    def after_timeout(self, prepared: Prepared, outcome: Outcome) -> Outcome:
        """A sync handler passed its timeout but its thread still runs: keep the lease until it ends."""
        with self._lock:
            run = self._runs.get(prepared.delivery.receipt)
            if run is not None:
                run.timed_out_outcome = outcome
        return outcome

    def after_late_return(self, prepared: Prepared, *, result: object, error: BaseException | None) -> None:
        """The thread of a timed-out handler ended: complete the record if it succeeded, else release."""
        run = self._pop(prepared)
        if run is None:
            return
        if prepared.job.cancelled:
            self._settle(prepared.job, run, Cancelled())
        elif error is None:
            self._settle(prepared.job, run, Completed(result=result))
        else:
            final = isinstance(run.timed_out_outcome, DeadLetter)
            self._release(run, f"{type(error).__name__}: {error}", is_final=final)

    def renew(self, prepared: Prepared) -> None:
        """Extend the lease of a running job (called on the visibility heartbeat)."""
        with self._lock:
            run = self._runs.get(prepared.delivery.receipt)
        if run is None:
            return
        try:
            renewal = self.store.renew(run.key, run.token, lease=self.lease)
        except IdempotencyError as exc:
            logger.warning("renewing the lease of job %s failed: %s", prepared.job.id, exc)
            return
        if renewal.is_cancel_requested and not prepared.job.cancelled:
            logger.info("job %s: cancellation requested", prepared.job.id)
            prepared.job.cancel_signal.set()

    def record_progress(self, job: Job, percent: int) -> None:
        """Write a running job's progress (renewing its lease on the way)."""
        with self._lock:
            run = self._runs.get(job.message.receipt)
        if run is None:
            return
        try:
            renewal = self.store.renew(
                run.key, run.token, lease=lease_bound() or self.lease, progress=percent
            )
        except IdempotencyError as exc:
            logger.warning("recording progress of job %s failed: %s", job.id, exc)
            return
        if renewal.is_cancel_requested:
            job.cancel_signal.set()

    # -- internals --------------------------------------------------------------------------------

    def _pop(self, prepared: Prepared) -> _Run | None:
        with self._lock:
            return self._runs.pop(prepared.delivery.receipt, None)

    def _settle(self, job: Job, run: _Run, outcome: Outcome) -> None:
        match outcome:
            case Completed(result=result):
                encoded = encode_result(result, max_bytes=self.max_result_bytes)
                if encoded.omitted:
                    logger.warning("result of job %s not stored: %s", job.id, encoded.omitted)
                try:
                    self.store.complete(
                        run.key,
                        run.token,
                        result=encoded.json,
                        result_omitted=encoded.omitted,
                        retention=self.retention,
                    )
                except IdempotencyError as exc:
                    # The side effect happened: acknowledge anyway. Only a duplicate delivered after
                    # the lease lapses can run it again (the crash window, documented).
                    logger.error("completing the record of job %s failed: %s", job.id, exc)
            case DeadLetter(error=error):
                self._release(run, error, is_final=True)
            case Retry(error=error):
                self._release(run, error, is_final=False)
            case Deferred(reason=reason) | Released(reason=reason):
                self._release(run, f"not run: {reason}", is_final=False)
            case Cancelled():
                self._finish_cancelled(run)

    def _finish_cancelled(self, run: _Run) -> None:
        if not isinstance(self.store, JobControlStore):
            self._release(run, "cancelled", is_final=True)
            return
        try:
            self.store.finish_cancelled(run.key, run.token)
        except IdempotencyError as exc:
            logger.warning("recording the cancellation on %r failed: %s", run.key, exc)

    def _release(self, run: _Run, error: str, *, is_final: bool) -> None:
        try:
            self.store.release(run.key, run.token, error=error, is_final=is_final)
        except IdempotencyError as exc:
            # The lease lapses by itself; the outcome (and the handler's own error) stands.
            logger.warning("releasing the lease on %r failed: %s", run.key, exc)

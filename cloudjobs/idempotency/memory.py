"""MemoryIdempotencyStore: the idempotency store in a dict, with the DynamoDB store's semantics.

Leases expire, clock skew is allowed for, records expire after their retention, results and payload
hashes are kept and compared exactly as :class:`~cloudjobs.idempotency.dynamodb.DynamoDbIdempotencyStore`
does, so the consumer behaves the same on both. It also keeps schedule records with the same claim
semantics (the ScheduleStore protocol, through a :class:`~cloudjobs.scheduling.memory.MemoryScheduleStore`
on the same clock) and reservations of unique jobs (the UniquenessStore protocol, through a
:class:`~cloudjobs.uniqueness.memory.MemoryUniquenessStore`). Readers of a record may wait for the
next write (:meth:`MemoryIdempotencyStore.wait_for_change`) instead of polling. For tests and
single-process use.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection
from datetime import datetime, timedelta

from cloudjobs.clock import Clock, SystemClock
from cloudjobs.errors import LeaseLostError
from cloudjobs.flows.memory import MemoryFlowStore
from cloudjobs.idempotency.base import (
    DEFAULT_CLOCK_SKEW,
    Acquired,
    AcquireResult,
    Cancellation,
    CancelOutcome,
    Claim,
    InProgress,
    Record,
    Renewal,
    Status,
    cancel_marker_key,
    lapse_after,
    standing_refusal,
)
from cloudjobs.ids import random_hex
from cloudjobs.scheduling.memory import MemoryScheduleStore
from cloudjobs.scheduling.state import ScheduleState, TickClaim, TickState
from cloudjobs.uniqueness.memory import MemoryUniquenessStore
from cloudjobs.uniqueness.state import Held, ReserveResult, UniqueClaim

_RELEASED = frozenset({Status.PENDING, Status.RETRYING, Status.DEAD_LETTERED})
_FINISHED = frozenset({Status.COMPLETED, Status.DEAD_LETTERED, Status.CANCELLED})


class MemoryIdempotencyStore:
    """A thread-safe in-memory idempotency store.

    Args:
        clock: the time source (a :class:`~cloudjobs.clock.ManualClock` in tests).
        clock_skew: how long after its expiry a lease counts as lapsed.
    """

    def __init__(self, *, clock: Clock | None = None, clock_skew: timedelta = DEFAULT_CLOCK_SKEW) -> None:
        self._clock: Clock = clock or SystemClock()
        self._clock_skew = clock_skew
        self._records: dict[str, Record] = {}
        self._tokens: dict[str, str] = {}
        self._markers: dict[str, datetime] = {}
        self._aliases: dict[str, tuple[str, datetime]] = {}
        self._lock = threading.Lock()
        # Every write of a record moves the version on and wakes the readers waiting for a change.
        self._changed = threading.Condition(self._lock)
        self._version = 0
        self._schedules = MemoryScheduleStore(clock=self._clock)
        self._unique = MemoryUniquenessStore(clock=self._clock, clock_skew=clock_skew)
        self._flows: MemoryFlowStore | None = None
        self.requests = 0

    @property
    def flows(self) -> MemoryFlowStore:
        """The flows kept on this store's records (see :mod:`cloudjobs.flows`)."""
        with self._lock:
            if self._flows is None:
                self._flows = MemoryFlowStore(
                    records=self._records, lock=self._lock, on_change=self._note_change, clock=self._clock
                )
            return self._flows

    def acquire(self, claim: Claim, *, lease: timedelta, retention: timedelta) -> AcquireResult:
        """Take the lease on ``claim.key``; see :meth:`IdempotencyStore.acquire`."""
        with self._lock:
            self.requests += 1
            now = self._clock.now()
            old = self._records.get(claim.key)
            if old is not None and old.expires_at >= now - self._clock_skew:
                refusal = standing_refusal(old, claim)
                if refusal is not None:
                    return refusal
                if old.status is Status.IN_PROGRESS:
                    assert old.lease_expires_at is not None
                    available_at = lapse_after(old.lease_expires_at, clock_skew=self._clock_skew)
                    if available_at >= now:
                        return InProgress(job_id=old.job_id, available_at=available_at)
                else:
                    assert old.status in _RELEASED
            token = random_hex()
            lease_expires_at = now + lease
            # Like DynamoDB's UpdateItem: a takeover keeps attempts, progress, error and creation time.
            self._records[claim.key] = Record(
                key=claim.key,
                job_id=old.job_id if old is not None else claim.job_id,
                job_type=claim.job_type,
                status=Status.IN_PROGRESS,
                payload_hash=claim.payload_hash,
                attempts=(old.attempts if old is not None else 0) + 1,
                created_at=old.created_at if old is not None else now,
                updated_at=now,
                expires_at=now + retention,
                lease_expires_at=lease_expires_at,
                progress=old.progress if old is not None else None,
                error=old.error if old is not None else None,
                due_at=old.due_at if old is not None else None,
                # Like if_not_exists: the first correlation and trace ids written stay.
                correlation_id=(old.correlation_id if old is not None else None) or claim.correlation_id,
                trace_id=(old.trace_id if old is not None else None) or claim.trace_id,
                children=old.children if old is not None else None,
            )
            self._tokens[claim.key] = token
            self._note_change()
            return Acquired(token=token, lease_expires_at=lease_expires_at)

    def renew(self, key: str, token: str, *, lease: timedelta, progress: int | None = None) -> Renewal:
        """Extend a held lease; see :meth:`IdempotencyStore.renew`."""
        with self._lock:
            record = self._held(key, token)
            now = self._clock.now()
            self._records[key] = dataclasses.replace(
                record,
                lease_expires_at=now + lease,
                updated_at=now,
                progress=record.progress if progress is None else progress,
            )
            return Renewal(is_cancel_requested=record.cancel_requested_at is not None)

    def complete(
        self, key: str, token: str, *, result: str | None, result_omitted: str | None, retention: timedelta
    ) -> None:
        """Mark the record completed; see :meth:`IdempotencyStore.complete`."""
        with self._lock:
            record = self._held(key, token)
            now = self._clock.now()
            self._records[key] = dataclasses.replace(
                record,
                status=Status.COMPLETED,
                result=result,
                result_omitted=result_omitted,
                progress=100,
                lease_expires_at=None,
                updated_at=now,
                expires_at=now + retention,
            )
            del self._tokens[key]
            self._note_change()

    def release(self, key: str, token: str, *, error: str, is_final: bool) -> None:
        """Give the lease up; see :meth:`IdempotencyStore.release`."""
        with self._lock:
            record = self._held(key, token)
            self._records[key] = dataclasses.replace(
                record,
                status=Status.DEAD_LETTERED if is_final else Status.RETRYING,
                error=error,
                lease_expires_at=None,
                updated_at=self._clock.now(),
            )
            del self._tokens[key]
            self._note_change()

    # -- JobControlStore ---------------------------------------------------------------------------

    def put_pending(self, claim: Claim, *, retention: timedelta) -> bool:
        """Write a pending record unless a live one exists; see :meth:`JobControlStore.put_pending`."""
        with self._lock:
            self.requests += 1
            now = self._clock.now()
            old = self._records.get(claim.key)
            if old is not None and old.expires_at >= now - self._clock_skew:
                if old.job_id != claim.job_id:
                    self._aliases[claim.job_id] = (claim.key, now + retention)
                return False
            self._records[claim.key] = Record(
                key=claim.key,
                job_id=claim.job_id,
                job_type=claim.job_type,
                status=Status.PENDING,
                payload_hash=claim.payload_hash,
                attempts=0,
                created_at=now,
                updated_at=now,
                expires_at=max(now, claim.due_at or now) + retention,
                due_at=claim.due_at,
                correlation_id=claim.correlation_id,
                trace_id=claim.trace_id,
            )
            self._note_change()
            return True

    def find_through_alias(self, job_id: str) -> Record | None:
        """The record a duplicate was pointed at; see :meth:`JobControlStore.find_through_alias`."""
        with self._lock:
            self.requests += 1
            now = self._clock.now()
            alias = self._aliases.get(job_id)
            if alias is None or alias[1] < now:
                return None
            record = self._records.get(alias[0])
            return record if record is not None and record.expires_at >= now else None

    def cancel(self, job_id: str, *, retention: timedelta) -> Cancellation:
        """Cancel a job by id; see :meth:`JobControlStore.cancel`."""
        with self._lock:
            self.requests += 1
            now = self._clock.now()
            record = self._live(job_id, now)
            if record is None:
                marker = cancel_marker_key(job_id)
                self._markers.setdefault(marker, now + retention)
                return Cancellation(CancelOutcome.MARKED)
            if record.status in _FINISHED:
                return Cancellation(CancelOutcome.ALREADY_FINISHED, record)
            if record.status is Status.IN_PROGRESS:
                assert record.lease_expires_at is not None
                if lapse_after(record.lease_expires_at, clock_skew=self._clock_skew) >= now:
                    requested = dataclasses.replace(
                        record, cancel_requested_at=record.cancel_requested_at or now, updated_at=now
                    )
                    self._records[record.key] = requested
                    self._note_change()
                    return Cancellation(CancelOutcome.REQUESTED, requested)
            cancelled = dataclasses.replace(
                record, status=Status.CANCELLED, lease_expires_at=None, updated_at=now
            )
            self._records[record.key] = cancelled
            self._tokens.pop(record.key, None)
            self._note_change()
            return Cancellation(CancelOutcome.CANCELLED, cancelled)

    def is_marked_cancelled(self, job_id: str) -> bool:
        """True when a live marker exists; see :meth:`JobControlStore.is_marked_cancelled`."""
        return self.cancel_marker_expiry(job_id) is not None

    def cancel_marker_expiry(self, job_id: str) -> datetime | None:
        """The live marker's expiry; see :meth:`JobControlStore.cancel_marker_expiry`."""
        with self._lock:
            self.requests += 1
            expires_at = self._markers.get(cancel_marker_key(job_id))
            return expires_at if expires_at is not None and expires_at >= self._clock.now() else None

    def marked_cancelled(self, job_ids: Collection[str]) -> set[str]:
        """The ids with a live marker; see :meth:`JobControlStore.marked_cancelled`."""
        with self._lock:
            self.requests += 1
            now = self._clock.now()
            return {
                job_id
                for job_id in job_ids
                if (expires_at := self._markers.get(cancel_marker_key(job_id))) is not None
                and expires_at >= now
            }

    def finish_cancelled(self, key: str, token: str) -> None:
        """Settle a held lease as cancelled; see :meth:`JobControlStore.finish_cancelled`."""
        with self._lock:
            record = self._held(key, token)
            now = self._clock.now()
            self._records[key] = dataclasses.replace(
                record,
                status=Status.CANCELLED,
                cancel_requested_at=record.cancel_requested_at or now,
                lease_expires_at=None,
                updated_at=now,
            )
            del self._tokens[key]
            self._note_change()

    def find(self, job_id: str) -> Record | None:
        """The live record of a job; see :meth:`IdempotencyStore.find`."""
        with self._lock:
            self.requests += 1
            now = self._clock.now()
            for record in self._records.values():
                if record.job_id == job_id and record.expires_at >= now:
                    return record
            return None

    def get_record(self, key: str) -> Record | None:
        """The live record under ``key``; see :meth:`RecordReader.get_record`."""
        with self._lock:
            self.requests += 1
            record = self._records.get(key)
            return record if record is not None and record.expires_at >= self._clock.now() else None

    def changes(self) -> int:
        """How many writes records have had: pass it to :meth:`wait_for_change`."""
        with self._lock:
            return self._version

    def wait_for_change(self, seen: int, timeout: float) -> None:
        """Wait until a record is written after ``changes()`` returned ``seen``, at most ``timeout``
        seconds of real time (any write wakes it: read what you wait for again)."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != seen, timeout=timeout)

    def _note_change(self) -> None:
        self._version += 1
        self._changed.notify_all()

    # -- UniquenessStore ---------------------------------------------------------------------------

    def reserve(self, claim: UniqueClaim, *, replacing: str | None = None) -> ReserveResult:
        """See :meth:`MemoryUniquenessStore.reserve`."""
        return self._unique.reserve(claim, replacing=replacing)

    def take_over(self, claim: UniqueClaim, held: Held) -> ReserveResult:
        """See :meth:`MemoryUniquenessStore.take_over`."""
        return self._unique.take_over(claim, held)

    def confirm_reservation(self, key: str, token: str) -> bool:
        """See :meth:`MemoryUniquenessStore.confirm_reservation`."""
        return self._unique.confirm_reservation(key, token)

    def release_reservation(self, key: str, token: str) -> None:
        """See :meth:`MemoryUniquenessStore.release_reservation`."""
        self._unique.release_reservation(key, token)

    # -- ScheduleStore ------------------------------------------------------------------------------

    def schedule_state(self, schedule: str) -> ScheduleState | None:
        """See :meth:`MemoryScheduleStore.schedule_state`."""
        return self._schedules.schedule_state(schedule)

    def claim_tick(
        self, schedule: str, tick: datetime, *, seen: ScheduleState | None, lease: timedelta, owner: str
    ) -> TickClaim | ScheduleState:
        """See :meth:`MemoryScheduleStore.claim_tick`."""
        return self._schedules.claim_tick(schedule, tick, seen=seen, lease=lease, owner=owner)

    def settle_tick(
        self, claim: TickClaim, outcome: TickState, *, job_id: str | None = None
    ) -> ScheduleState:
        """See :meth:`MemoryScheduleStore.settle_tick`."""
        return self._schedules.settle_tick(claim, outcome, job_id=job_id)

    def _live(self, job_id: str, now: datetime) -> Record | None:
        for record in self._records.values():
            if record.job_id == job_id and record.expires_at >= now:
                return record
        return None

    def records(self) -> list[Record]:
        """Every record held, expired ones included (for tests)."""
        with self._lock:
            return list(self._records.values())

    def _held(self, key: str, token: str) -> Record:
        self.requests += 1
        record = self._records.get(key)
        if record is None or self._tokens.get(key) != token or record.status is not Status.IN_PROGRESS:
            raise LeaseLostError(f"the lease on {key!r} is no longer held by this token", key=key)
        return record

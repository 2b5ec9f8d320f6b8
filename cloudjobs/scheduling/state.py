"""The schedule store protocol: one state record per schedule, advanced tick by tick by conditional
writes, so that however many schedulers run, each tick is claimed by one of them.

A schedule's record says which tick was claimed last and what became of it::

    (absent) ──claim_tick──▶ firing (a lease) ──settle_tick──▶ fired · skipped · missed · failed
    settled ───claim_tick (a later tick)──▶ firing
    firing, lease lapsed (its scheduler died) · failed ──claim_tick (the same tick)──▶ firing

Every write is conditional on the record being exactly as the writer last saw it (its ``version``;
absent or expired for the first): of several schedulers claiming one tick, one wins and the others
get the record as it now is, with no extra read. A claim holds a lease; if its holder dies before
settling, another scheduler claims the same tick again once the lease has lapsed and fires it under
the same job id. What to claim next is decided by :mod:`cloudjobs.scheduling.plan`, from the record.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol, runtime_checkable

STATE_RETENTION: Final = timedelta(days=400)
"""How long a schedule's record is kept after its last write: past a yearly schedule's next tick, so
its last fire is still known then (a schedule removed from code is forgotten after this)."""


class TickState(enum.Enum):
    """What became of the last tick claimed (stored as the value)."""

    FIRING = "firing"
    """Claimed; its holder is enqueueing the job under a lease."""
    FIRED = "fired"
    """Its job was enqueued."""
    SKIPPED = "skipped"
    """Not fired: the previous run was still pending or running (``overlap="skip"``)."""
    MISSED = "missed"
    """Not fired: it was later than the misfire grace (``catch_up="skip"``)."""
    FAILED = "failed"
    """Its enqueue failed: it is claimed again (and fired under the same job id) within the grace."""


SETTLED: Final = frozenset({TickState.FIRED, TickState.SKIPPED, TickState.MISSED})
"""States after which the next tick is due; a failed tick is fired again first."""


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A schedule's record.

    Attributes:
        schedule: the schedule's name.
        tick: the last tick claimed.
        tick_state: what became of it.
        version: how many writes the record has had (each write is conditional on it).
        lease_expires_at: while firing: when the claim's lease ends, by its holder's clock.
        owner: who claimed the last tick (``host:pid`` of the scheduler).
        last_fired_tick: the last tick whose job was enqueued (None before the first).
        last_job_id: that job's id (``overlap="skip"`` reads its status).
        last_fired_at: when that job was enqueued.
        updated_at: the last write.
        expires_at: when the record stops counting (it counts as absent after).
    """

    schedule: str
    tick: datetime
    tick_state: TickState
    version: int
    lease_expires_at: datetime | None
    owner: str
    last_fired_tick: datetime | None
    last_job_id: str | None
    last_fired_at: datetime | None
    updated_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TickClaim:
    """A tick claimed for firing: proof for :meth:`ScheduleStore.settle_tick`.

    Attributes:
        schedule: the schedule's name.
        tick: the tick claimed.
        token: identifies this claim (a later claim of the same tick has another).
        lease_expires_at: when another scheduler may claim the tick again, less the clock skew.
        previous: the record the claim was made over (None for the schedule's first).
    """

    schedule: str
    tick: datetime
    token: str
    lease_expires_at: datetime
    previous: ScheduleState | None


@runtime_checkable
class ScheduleStore(Protocol):
    """Schedule records, advanced by conditional writes. Every method may raise
    :class:`~cloudjobs.errors.IdempotencyStoreError` (the store is unreachable or refused).

    The memory and DynamoDB idempotency stores implement it on the records they already keep
    (DynamoDB: the idempotency table, under the key ``#schedule#<name>``).
    """

    def schedule_state(self, schedule: str) -> ScheduleState | None:
        """The schedule's record, or None when there is none or it expired (a strongly consistent
        read)."""
        ...

    def claim_tick(
        self, schedule: str, tick: datetime, *, seen: ScheduleState | None, lease: timedelta, owner: str
    ) -> TickClaim | ScheduleState:
        """Claim ``tick`` for firing, if the record is still ``seen`` (absent or expired when None)
        and ``tick`` is not before its tick. One conditional write.

        Returns:
            The claim, or the record as it is when the condition failed (another writer was first).
        """
        ...

    def settle_tick(
        self, claim: TickClaim, outcome: TickState, *, job_id: str | None = None
    ) -> ScheduleState:
        """Record what became of a claimed tick (``job_id`` for :attr:`TickState.FIRED`) and end the
        lease. One conditional write.

        Raises:
            LeaseLostError: the claim no longer holds the record (its lease lapsed and another
                scheduler claimed the tick again).
        """
        ...


def schedule_key(schedule: str) -> str:
    """The store key of a schedule's record (never a job record's: ``#`` starts no job type)."""
    return f"#schedule#{schedule}"

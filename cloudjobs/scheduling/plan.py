"""What a scheduler does next for one schedule, decided from its record alone (no I/O, no clock).

Every scheduler process decides the same way from the same record, and the store's conditional
writes let one of them act; the others see the record it wrote and decide again. The rules:

- **No record** (a new schedule): the latest tick at or before now fires if it is within the
  misfire grace, else the schedule waits for its next tick (a new schedule does not catch up).
- **A tick being fired** under a live lease: wait for its holder, until the lease lapses (plus the
  clock-skew allowance) or the next tick is due, whichever is first.
- **A tick whose lease lapsed, or whose enqueue failed**: fire that same tick again (same job id)
  while it is within the misfire grace; later than that it is missed like any other.
- **A settled tick**: the next tick fires when due; one within the misfire grace fires late.
- **Ticks missed** by more than the grace: ``catch_up="skip"`` records the latest of them as
  missed, with their count; ``catch_up="once"`` fires the latest of them, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cloudjobs.idempotency.base import lapse_after
from cloudjobs.scheduling.definition import CatchUp, Schedule
from cloudjobs.scheduling.state import SETTLED, ScheduleState, TickState
from cloudjobs.scheduling.ticks import Ticks

MAX_COUNTED_MISSES: Final = 100_000
"""Missed ticks are counted up to this many per catch-up (a cron schedule's count walks its ticks)."""
_BEFORE: Final = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing is due before ``until`` (None: the schedule never fires again)."""

    until: datetime | None


@dataclass(frozen=True, slots=True)
class Await:
    """Another scheduler holds a tick: read the record again at ``until``."""

    until: datetime


@dataclass(frozen=True, slots=True)
class Fire:
    """Claim ``tick`` and enqueue its job.

    Attributes:
        tick: the tick to fire.
        missed: ticks passed over before it, past the misfire grace (``catch_up="once"``).
    """

    tick: datetime
    missed: int = 0


@dataclass(frozen=True, slots=True)
class SkipMissed:
    """Claim ``tick``, the latest missed one, and record it missed with the ``count`` missed since
    ``first`` (``catch_up="skip"``)."""

    tick: datetime
    count: int
    first: datetime


Step = Idle | Await | Fire | SkipMissed
"""Everything :func:`next_step` can answer."""


def next_step(
    schedule: Schedule,
    ticks: Ticks,
    state: ScheduleState | None,
    *,
    now: datetime,
    clock_skew: timedelta,
    poll: timedelta,
) -> Step:
    """The next step for ``schedule`` at ``now``, given its record ``state`` (see the module docstring).

    Args:
        schedule: the schedule.
        ticks: its fire times.
        state: its record (None when there is none).
        now: the current time.
        clock_skew: how long after its expiry a lease counts as lapsed.
        poll: how soon to read the record again while another scheduler fires a tick that is
            already followed by a due one.
    """
    grace_start = now - schedule.misfire_grace
    if state is None:
        latest = ticks.at_or_before(now)
        if latest is not None and latest >= grace_start:
            return Fire(latest)
        return Idle(ticks.after(now))
    if state.tick_state is TickState.FIRING:
        assert state.lease_expires_at is not None
        lapses_at = lapse_after(state.lease_expires_at, clock_skew=clock_skew)
        if lapses_at >= now:
            following = ticks.after(state.tick)
            wake = following if following is not None and following > now else now + poll
            return Await(min(lapses_at, wake))
    # A lapsed or failed tick is still to fire itself; after a settled one, the next is due.
    first = ticks.after(state.tick) if state.tick_state in SETTLED else state.tick
    if first is None or first > now:
        return Idle(first)
    if first >= grace_start:
        return Fire(first)
    last_missed = ticks.at_or_before(grace_start - _BEFORE)
    assert last_missed is not None  # first itself is one
    count = 1 + ticks.count(first, last_missed, limit=MAX_COUNTED_MISSES - 1)
    if schedule.catch_up is CatchUp.ONCE:
        return Fire(last_missed, missed=count - 1)
    return SkipMissed(last_missed, count, first)

"""MemoryScheduleStore: schedule records in a dict, with the DynamoDB store's conditions.

:class:`~cloudjobs.idempotency.memory.MemoryIdempotencyStore` holds one and implements
:class:`~cloudjobs.scheduling.state.ScheduleStore` through it, so ``jobs.testing()`` gives schedulers
a store with the same claim semantics as production: a claim succeeds only over the record as its
writer saw it, records expire, and a settle needs the claim's token.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime, timedelta

from cloudjobs.clock import Clock, SystemClock
from cloudjobs.errors import LeaseLostError
from cloudjobs.ids import random_hex
from cloudjobs.scheduling.state import STATE_RETENTION, ScheduleState, TickClaim, TickState, schedule_key


class MemoryScheduleStore:
    """A thread-safe in-memory schedule store.

    Args:
        clock: the time source of writes and expiry (a :class:`~cloudjobs.clock.ManualClock` in tests).
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._states: dict[str, ScheduleState] = {}
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self.requests = 0

    def schedule_state(self, schedule: str) -> ScheduleState | None:
        """The live record; see :meth:`ScheduleStore.schedule_state`."""
        with self._lock:
            self.requests += 1
            return self._live(schedule, self._clock.now())

    def claim_tick(
        self, schedule: str, tick: datetime, *, seen: ScheduleState | None, lease: timedelta, owner: str
    ) -> TickClaim | ScheduleState:
        """Claim a tick if the record is still ``seen``; see :meth:`ScheduleStore.claim_tick`."""
        with self._lock:
            self.requests += 1
            now = self._clock.now()
            current = self._live(schedule, now)
            is_seen = (
                current is None if seen is None else current is not None and current.version == seen.version
            )
            if not is_seen or (current is not None and tick < current.tick):
                assert current is not None  # absent and unseen cannot both hold
                return current
            old = self._states.get(schedule_key(schedule))
            token = random_hex()
            lease_expires_at = now + lease
            self._states[schedule_key(schedule)] = ScheduleState(
                schedule=schedule,
                tick=tick,
                tick_state=TickState.FIRING,
                version=(old.version if old is not None else 0) + 1,
                lease_expires_at=lease_expires_at,
                owner=owner,
                # Like DynamoDB's UpdateItem: a claim keeps what the record says of the last fire.
                last_fired_tick=old.last_fired_tick if old is not None else None,
                last_job_id=old.last_job_id if old is not None else None,
                last_fired_at=old.last_fired_at if old is not None else None,
                updated_at=now,
                expires_at=now + STATE_RETENTION,
            )
            self._tokens[schedule_key(schedule)] = token
            return TickClaim(schedule, tick, token, lease_expires_at, current)

    def settle_tick(
        self, claim: TickClaim, outcome: TickState, *, job_id: str | None = None
    ) -> ScheduleState:
        """Record a claimed tick's outcome; see :meth:`ScheduleStore.settle_tick`."""
        with self._lock:
            self.requests += 1
            key = schedule_key(claim.schedule)
            current = self._states.get(key)
            if (
                current is None
                or self._tokens.get(key) != claim.token
                or current.tick_state is not TickState.FIRING
                or current.tick != claim.tick
            ):
                raise LeaseLostError(
                    f"the claim on tick {claim.tick} of {claim.schedule!r} was lost", key=key
                )
            now = self._clock.now()
            settled = dataclasses.replace(
                current,
                tick_state=outcome,
                version=current.version + 1,
                lease_expires_at=None,
                updated_at=now,
                expires_at=now + STATE_RETENTION,
            )
            if outcome is TickState.FIRED:
                settled = dataclasses.replace(
                    settled, last_fired_tick=claim.tick, last_job_id=job_id, last_fired_at=now
                )
            self._states[key] = settled
            del self._tokens[key]
            return settled

    def _live(self, schedule: str, now: datetime) -> ScheduleState | None:
        state = self._states.get(schedule_key(schedule))
        return state if state is not None and state.expires_at >= now else None

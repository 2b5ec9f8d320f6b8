"""MemoryUniquenessStore: reservations of unique keys in a dict, with the DynamoDB store's conditions.

:class:`~cloudjobs.idempotency.memory.MemoryIdempotencyStore` holds one on its clock and implements
:class:`~cloudjobs.uniqueness.state.UniquenessStore` through it, so ``jobs.testing()`` and
``jobs.drain()`` exercise unique jobs without AWS.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime, timedelta

from cloudjobs.clock import Clock
from cloudjobs.ids import random_hex
from cloudjobs.uniqueness.state import Held, ReservationState, Reserved, ReserveResult, UniqueClaim


class MemoryUniquenessStore:
    """A thread-safe in-memory uniqueness store.

    Args:
        clock: the time source (the idempotency store's).
        clock_skew: how long after its timeout a reservation counts as lapsed.
    """

    def __init__(self, *, clock: Clock, clock_skew: timedelta) -> None:
        self._clock = clock
        self._clock_skew = clock_skew
        self._held: dict[str, Held] = {}
        self._lock = threading.Lock()
        self.requests = 0

    def reserve(self, claim: UniqueClaim, *, replacing: str | None = None) -> ReserveResult:
        """See :meth:`UniquenessStore.reserve`."""
        with self._lock:
            self.requests += 1
            now = self._clock.now()
            old = self._held.get(claim.key)
            is_free = old is None or old.window_ends_at < now
            is_replaced = (
                old is not None
                and replacing is not None
                and old.job_id == replacing
                and old.state is ReservationState.SENT
            )
            if old is not None and not (is_free or is_replaced):
                return old
            return self._write(claim, claim.job_id, window_ends_at=now + claim.window, is_takeover=False)

    def take_over(self, claim: UniqueClaim, held: Held) -> ReserveResult:
        """See :meth:`UniquenessStore.take_over`."""
        with self._lock:
            self.requests += 1
            now = self._clock.now()
            old = self._held.get(claim.key)
            if old is None or old.token != held.token or not old.is_lapsed(now, clock_skew=self._clock_skew):
                return old if old is not None else held
            return self._write(claim, old.job_id, window_ends_at=old.window_ends_at, is_takeover=True)

    def confirm_reservation(self, key: str, token: str) -> bool:
        """See :meth:`UniquenessStore.confirm_reservation`."""
        with self._lock:
            self.requests += 1
            old = self._held.get(key)
            if old is None or old.token != token or old.state is not ReservationState.RESERVED:
                return False
            self._held[key] = dataclasses.replace(
                old, state=ReservationState.SENT, token=None, reserved_until=None
            )
            return True

    def release_reservation(self, key: str, token: str) -> None:
        """See :meth:`UniquenessStore.release_reservation`."""
        with self._lock:
            self.requests += 1
            old = self._held.get(key)
            if old is not None and old.token == token and old.state is ReservationState.RESERVED:
                self._held[key] = dataclasses.replace(old, state=ReservationState.RELEASED)

    def _write(
        self, claim: UniqueClaim, job_id: str, *, window_ends_at: datetime, is_takeover: bool
    ) -> Reserved:
        token = random_hex()
        now = self._clock.now()
        self._held[claim.key] = Held(
            job_id=job_id,
            state=ReservationState.RESERVED,
            token=token,
            reserved_until=now + claim.reservation,
            window_ends_at=window_ends_at,
            record_key=claim.record_key,
        )
        return Reserved(job_id=job_id, token=token, is_takeover=is_takeover)

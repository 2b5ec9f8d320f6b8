"""MemoryLimiter: rate budgets and concurrency slots in dicts, with the DynamoDB limiter's semantics.

Same GCRA arithmetic, same leases and clock-skew allowance, on a clock that tests move: a memory
queue's own time, so ``jobs.drain()`` moves past a deferral and finds the budget refilled. For tests
and single-process use.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from cloudjobs.clock import Clock, SystemClock
from cloudjobs.ids import random_hex
from cloudjobs.limits.base import (
    DEFAULT_CLOCK_SKEW,
    Granted,
    RateAnswer,
    RateExceeded,
    Slot,
    SlotAnswer,
    SlotsFull,
    gcra,
)
from cloudjobs.limits.spec import RateLimit


class MemoryLimiter:
    """A thread-safe in-memory :class:`~cloudjobs.limits.base.Limiter`.

    Args:
        clock: the time source (a memory queue, or a :class:`~cloudjobs.clock.ManualClock`).
        clock_skew: how long after its end a lease counts as lapsed.

    Attributes:
        requests: calls answered so far (the DynamoDB limiter's requests, for comparing costs).
    """

    def __init__(self, *, clock: Clock | None = None, clock_skew: timedelta = DEFAULT_CLOCK_SKEW) -> None:
        self._clock: Clock = clock or SystemClock()
        self._clock_skew = clock_skew
        self._arrivals: dict[str, float] = {}
        self._holders: dict[str, dict[str, datetime]] = {}
        self._lock = threading.Lock()
        self.requests = 0

    def take(self, key: str, rate: RateLimit) -> RateAnswer:
        """See :meth:`Limiter.take`."""
        now = self._clock.now()
        with self._lock:
            self.requests += 1
            tat, retry_at = gcra(self._arrivals.get(key), now.timestamp(), rate)
            if retry_at is not None:
                return RateExceeded(retry_at=datetime.fromtimestamp(retry_at, tz=UTC))
            self._arrivals[key] = tat
            return Granted()

    def acquire(self, key: str, limit: int, *, lease: timedelta) -> SlotAnswer:
        """See :meth:`Limiter.acquire`."""
        now = self._clock.now()
        with self._lock:
            self.requests += 1
            holders = self._holders.setdefault(key, {})
            for token, expires_at in list(holders.items()):
                if expires_at + self._clock_skew < now:
                    del holders[token]
            if len(holders) >= limit:
                return SlotsFull(lapses_at=min(holders.values()) + self._clock_skew)
            token = random_hex()
            holders[token] = now + lease
            return Slot(token=token, expires_at=now + lease)

    def renew(self, key: str, token: str, *, lease: timedelta) -> bool:
        """See :meth:`Limiter.renew`."""
        now = self._clock.now()
        with self._lock:
            self.requests += 1
            holders = self._holders.get(key, {})
            if token not in holders:
                return False
            holders[token] = now + lease
            return True

    def release(self, key: str, token: str) -> None:
        """See :meth:`Limiter.release`."""
        with self._lock:
            self.requests += 1
            self._holders.get(key, {}).pop(token, None)

    def held(self, key: str) -> int:
        """Live leases under ``key`` now (for tests)."""
        now = self._clock.now()
        with self._lock:
            return sum(1 for end in self._holders.get(key, {}).values() if end + self._clock_skew >= now)

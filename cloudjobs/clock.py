"""Time sources: the system clock in production, a settable one in tests."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """A source of the current time, always timezone-aware UTC."""

    def now(self) -> datetime:
        """The current time (UTC)."""
        ...


class SystemClock:
    """The machine's wall clock."""

    def now(self) -> datetime:
        """The current time (UTC)."""
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to; for tests of delays, visibility and backoff."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The current time (UTC)."""
        with self._lock:
            return self._now

    def advance(self, by: timedelta | float) -> None:
        """Move the clock forward by ``by`` (seconds or a timedelta)."""
        step = by if isinstance(by, timedelta) else timedelta(seconds=by)
        if step < timedelta(0):
            raise ValueError("a clock only moves forward")
        with self._lock:
            self._now += step

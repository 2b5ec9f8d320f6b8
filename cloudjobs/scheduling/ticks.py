"""When a schedule fires: its ticks, as timezone-aware UTC times.

**Interval schedules** (``every=``) tick at whole multiples of the interval since the Unix epoch:
elapsed time, the same instants in every process, untouched by daylight-saving changes (a 1-hour
interval stays 3,600 s apart across them).

**Cron schedules** are read in their time zone, as EventBridge Scheduler reads them: croniter walks
the expression over *naive* local wall-clock times (where every local time of a day appears once),
and each match becomes an instant through :mod:`zoneinfo`:

- a local time that does not exist (02:30 on the spring-forward day in Europe/Berlin) is skipped;
- a local time that exists twice (01:30 on the fall-back day) fires once, at its first occurrence
  (``fold=0``, still on summer time).

So a daily 01:30 job runs once on the fall-back day, and a daily 02:30 job does not run on the
spring-forward day. croniter is imported when a cron schedule is first used.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_SHIFT_MARGIN: Final = timedelta(hours=3)
"""How far from the local time of interest a search over wall-clock times starts: more than any
daylight-saving shift (two hours at most), so a match that a shift moves past it is still seen."""


class Ticks(Protocol):
    """The fire times of one schedule."""

    def after(self, moment: datetime) -> datetime | None:
        """The first tick strictly after ``moment`` (None: the schedule never fires again)."""
        ...

    def at_or_before(self, moment: datetime) -> datetime | None:
        """The last tick at or before ``moment`` (None: there is none)."""
        ...

    def count(self, start: datetime, end: datetime, *, limit: int) -> int:
        """How many ticks fall in ``(start, end]``, counting no further than ``limit``."""
        ...


class IntervalTicks:
    """Ticks at whole multiples of ``every`` since the Unix epoch.

    Args:
        every: the interval (positive).
    """

    def __init__(self, every: timedelta) -> None:
        if every <= timedelta(0):
            raise ValueError("an interval must be positive")
        self._step = every // _MICROSECOND

    def after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment``."""
        return self._tick(self._index(moment) + 1)

    def at_or_before(self, moment: datetime) -> datetime:
        """The last tick at or before ``moment``."""
        return self._tick(self._index(moment))

    def count(self, start: datetime, end: datetime, *, limit: int) -> int:
        """How many ticks fall in ``(start, end]`` (at most ``limit``)."""
        return max(0, min(limit, self._index(end) - self._index(start)))

    def _index(self, moment: datetime) -> int:
        return ((moment - _EPOCH) // _MICROSECOND) // self._step

    def _tick(self, index: int) -> datetime:
        return _EPOCH + index * self._step * _MICROSECOND


class CronTicks:
    """Ticks of a 5-field cron expression read in a time zone (see the module docstring).

    Args:
        expression: the cron expression (checked by the caller).
        tz: an IANA time zone name.
    """

    def __init__(self, expression: str, tz: str) -> None:
        self._expression = expression
        self._zone = zoneinfo.ZoneInfo(tz)

    def after(self, moment: datetime) -> datetime | None:
        """The first tick strictly after ``moment`` (None when croniter finds none within 50 years)."""
        start = self._wall_clock(moment) - _SHIFT_MARGIN
        for wall in self._walk(start, backwards=False):
            instant = self._instant(wall)
            if instant is not None and instant > moment:
                return instant
        return None

    def at_or_before(self, moment: datetime) -> datetime | None:
        """The last tick at or before ``moment`` (None when croniter finds none within 50 years)."""
        start = self._wall_clock(moment) + _SHIFT_MARGIN
        for wall in self._walk(start, backwards=True):
            instant = self._instant(wall)
            if instant is not None and instant <= moment:
                return instant
        return None

    def count(self, start: datetime, end: datetime, *, limit: int) -> int:
        """How many ticks fall in ``(start, end]`` (at most ``limit``)."""
        counted = 0
        tick = self.after(start)
        while tick is not None and tick <= end and counted < limit:
            counted += 1
            tick = self.after(tick)
        return counted

    def _wall_clock(self, moment: datetime) -> datetime:
        return moment.astimezone(self._zone).replace(tzinfo=None)

    def _walk(self, start: datetime, *, backwards: bool) -> Iterator[datetime]:
        """Matching naive wall-clock times from ``start`` on (or back), in order."""
        from croniter import CroniterBadDateError, croniter

        walker = croniter(self._expression, start)
        try:
            while True:
                wall: datetime = walker.get_prev(datetime) if backwards else walker.get_next(datetime)
                yield wall
        except CroniterBadDateError:
            return

    def _instant(self, wall: datetime) -> datetime | None:
        """The instant of a local wall-clock time: its first occurrence when it exists twice, None
        when it does not exist (skipped by a daylight-saving change)."""
        instant = wall.replace(tzinfo=self._zone, fold=0).astimezone(UTC)
        if instant.astimezone(self._zone).replace(tzinfo=None) != wall:
            return None
        return instant


def ticks_of(cron: str | None, every: timedelta | None, tz: str) -> Ticks:
    """The ticks of a schedule's ``cron`` (in ``tz``) or ``every``."""
    if every is not None:
        return IntervalTicks(every)
    assert cron is not None
    return CronTicks(cron, tz)


def is_valid_cron(expression: str) -> bool:
    """True when croniter reads ``expression`` (five fields are checked by the caller)."""
    from croniter import croniter

    return bool(croniter.is_valid(expression))

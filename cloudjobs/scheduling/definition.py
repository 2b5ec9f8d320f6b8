"""A recurring schedule as declared in code: ``jobs.schedule(name, cron=... | every=..., ...)``.

A :class:`Schedule` is plain data, checked once when it is declared: what fires (a job type and a
JSON payload), when (a 5-field cron expression in a time zone, or a fixed interval), and the rules
for late and overlapping runs. The self-hosted scheduler (:mod:`cloudjobs.scheduling.scheduler`)
fires it; a sync to EventBridge Scheduler can translate the same data.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from pydantic import JsonValue

from cloudjobs.errors import InvalidScheduleError
from cloudjobs.scheduling.rules import DEFAULT_MISFIRE_GRACE as DEFAULT_MISFIRE_GRACE
from cloudjobs.scheduling.rules import CatchUp as CatchUp
from cloudjobs.scheduling.rules import Overlap as Overlap
from cloudjobs.scheduling.ticks import CronTicks, Ticks, is_valid_cron, ticks_of

MAX_NAME_LENGTH: Final = 64
"""The longest schedule name: EventBridge Scheduler's limit, so a schedule keeps its name in AWS."""
_NAME: Final = re.compile(r"[0-9A-Za-z_.-]+")
_CRON_FIELDS: Final = 5
# croniter extensions whose ticks differ between processes (random "R", hashed "H"): never allowed.
_NONDETERMINISTIC: Final = re.compile(r"(^|[,/])[RrHh]($|[(/,])")
_CHECK_FROM: Final = datetime(2001, 1, 1, tzinfo=UTC)
"""Where a cron expression is asked for its first tick when it is declared (any fixed time would do)."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """One recurring schedule.

    Attributes:
        name: unique per idempotency table: 1–64 letters, digits, ``-``, ``_`` and ``.``.
        job_type: the job type each tick enqueues.
        payload: the JSON payload each tick's job gets.
        cron: a 5-field cron expression (minute hour day-of-month month day-of-week), read in ``tz``;
            None for an interval schedule.
        every: the interval of an interval schedule (whole seconds), counted from the Unix epoch
            in elapsed time; None for a cron schedule.
        tz: the IANA time zone of ``cron`` (``UTC`` for interval schedules).
        overlap: see :class:`Overlap`.
        catch_up: see :class:`CatchUp`.
        misfire_grace: how late a tick may still fire.
    """

    name: str
    job_type: str
    payload: JsonValue
    cron: str | None
    every: timedelta | None
    tz: str
    overlap: Overlap
    catch_up: CatchUp
    misfire_grace: timedelta

    @property
    def expression(self) -> str:
        """The schedule as people read it: the cron expression, or ``every 5m``."""
        if self.cron is not None:
            return self.cron
        assert self.every is not None
        return f"every {format_interval(self.every)}"

    def ticks(self) -> Ticks:
        """The schedule's fire times (see :mod:`cloudjobs.scheduling.ticks`)."""
        return ticks_of(self.cron, self.every, self.tz)

    def job_id(self, tick: datetime) -> str:
        """The id (and idempotency key) of the job fired for ``tick``: the schedule's name and the
        tick's time in UTC, so every fire of one tick, by any scheduler, is one job."""
        return f"schedule:{self.name}@{tick.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def define_schedule(
    name: str,
    *,
    job_type: str,
    payload: JsonValue,
    cron: str | None,
    every: timedelta | float | None,
    tz: str | None,
    overlap: Overlap | Literal["allow", "skip"],
    catch_up: CatchUp | Literal["skip", "once"],
    misfire_grace: timedelta | float,
) -> Schedule:
    """A checked :class:`Schedule` (see :meth:`CloudJobs.schedule <cloudjobs.app.CloudJobs.schedule>`).

    Raises:
        InvalidScheduleError: a malformed name, both or neither of ``cron`` and ``every``, a cron
            expression that is not five valid fields or never fires, an unknown time zone (or one
            given with ``every``), a non-positive or fractional interval, a misfire grace under a
            second, or an unknown ``overlap`` / ``catch_up``.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise InvalidScheduleError(
            f"a name is 1–{MAX_NAME_LENGTH} letters, digits, '-', '_' and '.'", schedule=str(name)
        )
    if (cron is None) == (every is None):
        raise InvalidScheduleError("give either cron= or every=, not both or neither", schedule=name)
    grace = _seconds(misfire_grace, name=name, setting="misfire_grace")
    if grace < timedelta(seconds=1):
        raise InvalidScheduleError("misfire_grace must be at least one second", schedule=name)
    if every is not None:
        if tz is not None and tz != "UTC":
            raise InvalidScheduleError(
                "every= counts elapsed time and has no time zone: use cron= for wall-clock times",
                schedule=name,
                setting="tz",
            )
        interval = _seconds(every, name=name, setting="every")
        if interval <= timedelta(0) or interval % timedelta(seconds=1):
            raise InvalidScheduleError(
                "every= must be a positive whole number of seconds", schedule=name, setting="every"
            )
        return Schedule(
            name,
            job_type,
            payload,
            None,
            interval,
            "UTC",
            _overlap(overlap, name),
            _catch_up(catch_up, name),
            grace,
        )
    assert cron is not None
    zone = tz if tz is not None else "UTC"
    _check_zone(zone, name)
    _check_cron(cron, zone, name)
    return Schedule(
        name,
        job_type,
        payload,
        " ".join(cron.split()),
        None,
        zone,
        _overlap(overlap, name),
        _catch_up(catch_up, name),
        grace,
    )


def format_interval(interval: timedelta) -> str:
    """An interval in the largest whole units: ``30s``, ``5m``, ``1h30m``, ``2d``."""
    seconds = int(interval.total_seconds())
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if seconds >= size:
            amount, seconds = divmod(seconds, size)
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"


def _seconds(value: timedelta | float, *, name: str, setting: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidScheduleError(
            f"{setting} takes seconds or a timedelta, not {type(value).__name__}",
            schedule=name,
            setting=setting,
        )
    return timedelta(seconds=value)


def _overlap(value: str, name: str) -> Overlap:
    try:
        return Overlap(value)
    except ValueError:
        raise InvalidScheduleError(
            f"overlap must be 'allow' or 'skip', not {value!r}", schedule=name, setting="overlap"
        ) from None


def _catch_up(value: str, name: str) -> CatchUp:
    try:
        return CatchUp(value)
    except ValueError:
        raise InvalidScheduleError(
            f"catch_up must be 'skip' or 'once', not {value!r}", schedule=name, setting="catch_up"
        ) from None


def _check_zone(zone: str, name: str) -> None:
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidScheduleError(
            f"unknown time zone {zone!r} (an IANA name such as 'Europe/Berlin')", schedule=name, setting="tz"
        ) from None


def _check_cron(cron: str, zone: str, name: str) -> None:
    fields = cron.split() if isinstance(cron, str) else []
    if len(fields) != _CRON_FIELDS:
        raise InvalidScheduleError(
            f"cron {cron!r} must have five fields: minute hour day-of-month month day-of-week",
            schedule=name,
            setting="cron",
        )
    if any(_NONDETERMINISTIC.search(field) for field in fields) or not is_valid_cron(cron):
        raise InvalidScheduleError(f"cron {cron!r} is not a valid expression", schedule=name, setting="cron")
    if CronTicks(cron, zone).after(_CHECK_FROM) is None:
        raise InvalidScheduleError(f"cron {cron!r} never fires", schedule=name, setting="cron")

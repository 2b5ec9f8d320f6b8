"""Schedules as EventBridge Scheduler expressions (``cloudjobs schedules sync``).

EventBridge cron has six fields (minute hour day-of-month month day-of-week year), needs ``?`` in
one of the two day fields, numbers weekdays 1–7 from Sunday (standard cron: 0–6 from Sunday, 7 also
Sunday), and cannot say "this day of the month *or* this weekday", which a 5-field cron restricting
both day fields means. ``rate()`` takes whole minutes and counts from the schedule's start, where
``every=`` counts from the Unix epoch.

So, at sync time:

- a cron expression is rewritten field by field (``*/n`` becomes ``0/n`` or ``1/n``, weekday numbers
  and ranges are shifted and listed, ``n#k`` kept with the weekday shifted);
- an interval that divides an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 minutes) or a day (1, 2,
  3, 4, 6, 8, 12 hours, or one day) becomes a UTC cron expression, which fires at the very ticks the
  self-hosted scheduler fires; any other whole number of minutes becomes ``rate(n minutes)``, whose
  ticks count from the moment the schedule is created;
- what cannot be said is refused with :class:`UntranslatableScheduleError` and its reason:
  sub-minute or fractional-minute intervals, both day fields restricted, ``L`` in day-of-week.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from cloudjobs.errors import InvalidScheduleError
from cloudjobs.scheduling.definition import Schedule

_WEEKDAYS: Final = {
    name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))
}
_PLAIN_FIELD: Final = re.compile(r"[0-9A-Za-z*,/-]+")
_DAY_OF_MONTH: Final = re.compile(r"[0-9*,/LW-]+")
_HOUR_DIVISORS: Final = (1, 2, 3, 4, 6, 8, 12)


class UntranslatableScheduleError(InvalidScheduleError):
    """A schedule that EventBridge Scheduler cannot fire as the self-hosted scheduler would; the
    message says why (the schedule still runs under ``cloudjobs scheduler``)."""


@dataclass(frozen=True, slots=True)
class Expression:
    """A schedule's EventBridge Scheduler expression and the time zone it is read in."""

    expression: str
    timezone: str


def eventbridge_expression(schedule: Schedule) -> Expression:
    """The EventBridge Scheduler expression firing ``schedule``'s ticks.

    Raises:
        UntranslatableScheduleError: the schedule cannot be said in EventBridge's terms.
    """
    if schedule.cron is not None:
        return Expression(f"cron({_cron(schedule.cron, schedule.name)})", schedule.tz)
    assert schedule.every is not None
    return Expression(_interval(int(schedule.every.total_seconds()), schedule.name), "UTC")


def _interval(seconds: int, name: str) -> str:
    if seconds % 60:
        raise UntranslatableScheduleError(
            f"every={seconds}s: EventBridge Scheduler fires at most once a minute, in whole minutes",
            schedule=name,
            setting="every",
        )
    minutes = seconds // 60
    if minutes < 60 and 60 % minutes == 0:
        return "cron(* * * * ? *)" if minutes == 1 else f"cron(0/{minutes} * * * ? *)"
    hours, rest = divmod(minutes, 60)
    if not rest and hours in _HOUR_DIVISORS:
        return "cron(0 * * * ? *)" if hours == 1 else f"cron(0 0/{hours} * * ? *)"
    if minutes == 24 * 60:
        return "cron(0 0 * * ? *)"
    return f"rate({minutes} minutes)"


def _cron(cron: str, name: str) -> str:
    minute, hour, day_of_month, month, day_of_week = cron.split()
    for value, label in ((minute, "minute"), (hour, "hour"), (month, "month")):
        if not _PLAIN_FIELD.fullmatch(value):
            raise _refused(name, f"the {label} field {value!r} uses what EventBridge cron does not")
    if not _DAY_OF_MONTH.fullmatch(day_of_month):
        raise _refused(name, f"the day-of-month field {day_of_month!r} uses what EventBridge cron does not")
    weekdays = _weekdays(day_of_week, name)
    if day_of_month != "*" and weekdays != "*":
        raise _refused(
            name,
            "it restricts both day-of-month and day-of-week (cron fires on either; EventBridge "
            "takes one of them)",
        )
    days = (_steps(day_of_month, first=1), "?") if weekdays == "*" else ("?", weekdays)
    fields = (_steps(minute, first=0), _steps(hour, first=0), days[0], _steps(month, first=1), days[1], "*")
    return " ".join(fields)


def _steps(field: str, *, first: int) -> str:
    """``*/n`` as EventBridge writes it: ``first/n``."""
    return ",".join(f"{first}/{part[2:]}" if part.startswith("*/") else part for part in field.split(","))


def _weekdays(field: str, name: str) -> str:
    """The day-of-week field in EventBridge's numbering (1–7 from Sunday), or ``*`` for every day."""
    if field in ("*", "?"):
        return "*"
    if "#" in field:
        day, _, nth = field.partition("#")
        if "," in field or not nth.isdigit() or not 1 <= int(nth) <= 5:
            raise _refused(name, f"the day-of-week field {field!r} is not one 'weekday#n' EventBridge takes")
        return f"{_weekday(day, field, name) + 1}#{nth}"
    if "L" in field.upper().replace("SAT", ""):
        raise _refused(name, f"the day-of-week field {field!r} uses 'L', which is not translated")
    days: set[int] = set()
    for part in field.split(","):
        days |= _weekday_part(part, field, name)
    if len(days) == 7:
        return "*"
    return ",".join(str(day + 1) for day in sorted(days))


def _weekday_part(part: str, field: str, name: str) -> set[int]:
    span, _, step_text = part.partition("/")
    step = 1
    if step_text:
        if not step_text.isdigit() or int(step_text) < 1:
            raise _refused(name, f"the day-of-week field {field!r} has a bad step")
        step = int(step_text)
    if span == "*":
        low, high = 0, 6
    elif "-" in span:
        start, _, end = span.partition("-")
        low, high = (
            _weekday(start, field, name, allow_seven=True),
            _weekday(end, field, name, allow_seven=True),
        )
    else:
        low = _weekday(span, field, name, allow_seven=True)
        high = 6 if step_text else low
    if high < low:
        raise _refused(name, f"the day-of-week field {field!r} has a range that runs backwards")
    return {day % 7 for day in range(low, high + 1, step)}


def _weekday(text: str, field: str, name: str, *, allow_seven: bool = False) -> int:
    """A weekday as standard cron numbers it (0 Sunday … 6 Saturday; 7 Sunday where allowed)."""
    upper = text.upper()
    if upper in _WEEKDAYS:
        return _WEEKDAYS[upper]
    if text.isdigit() and 0 <= int(text) <= (7 if allow_seven else 6):
        return int(text)
    if text.isdigit() and int(text) == 7:
        return 0
    raise _refused(name, f"the day-of-week field {field!r} has {text!r}, not a weekday")


def _refused(name: str, reason: str) -> UntranslatableScheduleError:
    return UntranslatableScheduleError(
        f"cannot be synced to EventBridge Scheduler: {reason}", schedule=name, setting="cron"
    )

"""Schedules as EventBridge Scheduler expressions: what `cloudjobs schedules sync` writes, and what
it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cloudjobs.errors import InvalidScheduleError
from cloudjobs.scheduling.definition import CatchUp, Overlap, Schedule, define_schedule
from cloudjobs.scheduling.expressions import (
    Expression,
    UntranslatableScheduleError,
    eventbridge_expression,
)


def _cron(expression: str, tz: str = "UTC") -> Schedule:
    return define_schedule(
        "nightly",
        job_type="report",
        payload={},
        cron=expression,
        every=None,
        tz=tz,
        overlap=Overlap.ALLOW,
        catch_up=CatchUp.SKIP,
        misfire_grace=60,
    )


def _every(seconds: float) -> Schedule:
    return define_schedule(
        "tick",
        job_type="report",
        payload={},
        cron=None,
        every=seconds,
        tz=None,
        overlap=Overlap.ALLOW,
        catch_up=CatchUp.SKIP,
        misfire_grace=60,
    )


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 2 * * *", "cron(0 2 * * ? *)"),  # every day: day-of-week becomes '?'
        ("*/15 * * * *", "cron(0/15 * * * ? *)"),
        ("30 9 1 * *", "cron(30 9 1 * ? *)"),  # a day of the month
        ("0 9 */2 * *", "cron(0 9 1/2 * ? *)"),
        ("0 0 1 */3 *", "cron(0 0 1 1/3 ? *)"),
        ("0 8 * * 1-5", "cron(0 8 ? * 2,3,4,5,6 *)"),  # Monday–Friday: 2–6 from Sunday
        ("0 8 * * 0", "cron(0 8 ? * 1 *)"),  # Sunday as 0...
        ("0 8 * * 7", "cron(0 8 ? * 1 *)"),  # ...and as 7
        ("0 8 * * 5-7", "cron(0 8 ? * 1,6,7 *)"),  # Friday to Sunday
        ("0 8 * * SAT,sun", "cron(0 8 ? * 1,7 *)"),
        ("0 8 * * */2", "cron(0 8 ? * 1,3,5,7 *)"),  # Sunday, Tuesday, Thursday, Saturday
        ("0 8 * * 1#2", "cron(0 8 ? * 2#2 *)"),  # the second Monday
        ("0 8 * * 0-6", "cron(0 8 * * ? *)"),  # every weekday named is every day
        ("0 12 L * *", "cron(0 12 L * ? *)"),  # the last day of the month
    ],
)
def test_cron_is_rewritten_in_eventbridges_six_fields(cron: str, expected: str) -> None:
    assert eventbridge_expression(_cron(cron, "Europe/Berlin")) == Expression(expected, "Europe/Berlin")


def test_weekday_numbers_fire_on_the_same_days_as_the_self_hosted_scheduler() -> None:
    # The self-hosted scheduler's own ticks name the days the EventBridge numbers must name.
    schedule = _cron("0 8 * * 1,3,5")
    tick = datetime(2026, 12, 1, tzinfo=UTC)
    weekdays = set()
    for _ in range(6):
        next_tick = schedule.ticks().after(tick)
        assert next_tick is not None
        weekdays.add(next_tick.isoweekday() % 7 + 1)  # Sunday = 1, as EventBridge counts
        tick = next_tick
    fields = eventbridge_expression(schedule).expression.removeprefix("cron(").removesuffix(")").split()
    assert {int(day) for day in fields[4].split(",")} == weekdays


@pytest.mark.parametrize(
    ("cron", "reason"),
    [
        ("0 8 1 * 1", "both day-of-month and day-of-week"),
        ("0 8 * * L5", "'L'"),
        ("0 8 * * 1#2,3#1", "weekday#n"),
    ],
)
def test_crons_eventbridge_cannot_say_are_refused_with_the_reason(cron: str, reason: str) -> None:
    with pytest.raises(UntranslatableScheduleError, match=reason) as caught:
        eventbridge_expression(_cron(cron))
    assert isinstance(caught.value, InvalidScheduleError)
    assert caught.value.schedule == "nightly"


@pytest.mark.parametrize(
    ("every", "expected"),
    [
        (60, "cron(* * * * ? *)"),
        (300, "cron(0/5 * * * ? *)"),  # divides an hour: the same ticks as counted from the epoch
        (1800, "cron(0/30 * * * ? *)"),
        (3600, "cron(0 * * * ? *)"),
        (6 * 3600, "cron(0 0/6 * * ? *)"),
        (86_400, "cron(0 0 * * ? *)"),
        (7 * 60, "rate(7 minutes)"),  # divides neither: counted from the schedule's creation
        (90 * 60, "rate(90 minutes)"),
        (timedelta(days=2).total_seconds(), "rate(2880 minutes)"),
    ],
)
def test_intervals_become_utc_crons_when_aligned_else_rates(every: float, expected: str) -> None:
    assert eventbridge_expression(_every(every)) == Expression(expected, "UTC")


def test_aligned_interval_crons_fire_at_the_self_hosted_ticks() -> None:
    schedule = _every(20 * 60)
    first = schedule.ticks().after(datetime(2026, 12, 2, 10, 7, tzinfo=UTC))
    assert first == datetime(2026, 12, 2, 10, 20, tzinfo=UTC)
    assert eventbridge_expression(schedule).expression == "cron(0/20 * * * ? *)"


@pytest.mark.parametrize("every", [2, 30, 90])
def test_intervals_that_are_not_whole_minutes_are_refused(every: float) -> None:
    with pytest.raises(UntranslatableScheduleError, match="whole minutes") as caught:
        eventbridge_expression(_every(every))
    assert caught.value.setting == "every"

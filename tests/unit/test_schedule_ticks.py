"""Fire times: cron read in a time zone across daylight-saving changes, and intervals in elapsed time.

2026's changes: Europe/Berlin springs forward on 29 March (02:00 CET → 03:00 CEST) and falls back on
25 October (03:00 CEST → 02:00 CET); America/New_York springs forward on 8 March (02:00 EST → 03:00
EDT) and falls back on 1 November (02:00 EDT → 01:00 EST).
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cloudjobs.scheduling.ticks import CronTicks, IntervalTicks, Ticks


def fires_between(ticks: Ticks, start: datetime, end: datetime) -> list[datetime]:
    """Every tick after ``start`` up to ``end``, walked with ``after``."""
    found: list[datetime] = []
    tick = ticks.after(start)
    while tick is not None and tick <= end:
        found.append(tick)
        tick = ticks.after(tick)
    return found


def local_days(ticks: list[datetime], zone: str) -> list[date]:
    return [tick.astimezone(ZoneInfo(zone)).date() for tick in ticks]


def around(day: date, zone: str) -> tuple[datetime, datetime]:
    """From noon two days before ``day`` to noon two days after, in ``zone`` (as UTC times: aware
    arithmetic in a zone would count wall-clock hours)."""
    tz = ZoneInfo(zone)
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=tz)
    return (noon - timedelta(days=2)).astimezone(UTC), (noon + timedelta(days=2)).astimezone(UTC)


@pytest.mark.parametrize(
    ("zone", "fall_back", "repeated"),
    [
        ("Europe/Berlin", date(2026, 10, 25), "30 2 * * *"),
        ("America/New_York", date(2026, 11, 1), "30 1 * * *"),
    ],
)
def test_a_daily_job_at_a_repeated_local_time_runs_once_on_the_fall_back_day(
    zone: str, fall_back: date, repeated: str
) -> None:
    start, end = around(fall_back, zone)

    fires = fires_between(CronTicks(repeated, zone), start, end)

    assert local_days(fires, zone) == [fall_back + timedelta(days=offset) for offset in (-1, 0, 1, 2)]


@pytest.mark.parametrize(
    ("zone", "fall_back", "repeated", "first_offset"),
    [
        ("Europe/Berlin", date(2026, 10, 25), "30 2 * * *", timedelta(hours=2)),
        ("America/New_York", date(2026, 11, 1), "30 1 * * *", timedelta(hours=-4)),
    ],
)
def test_a_repeated_local_time_fires_at_its_first_occurrence_still_on_summer_time(
    zone: str, fall_back: date, repeated: str, first_offset: timedelta
) -> None:
    start, end = around(fall_back, zone)

    [on_the_day] = [
        tick
        for tick in fires_between(CronTicks(repeated, zone), start, end)
        if local_days([tick], zone)[0] == fall_back
    ]

    assert on_the_day.astimezone(ZoneInfo(zone)).utcoffset() == first_offset


@pytest.mark.parametrize(
    ("zone", "spring_forward"), [("Europe/Berlin", date(2026, 3, 29)), ("America/New_York", date(2026, 3, 8))]
)
def test_a_local_time_that_does_not_exist_on_the_spring_forward_day_is_skipped(
    zone: str, spring_forward: date
) -> None:
    start, end = around(spring_forward, zone)

    fires = fires_between(CronTicks("30 2 * * *", zone), start, end)

    assert local_days(fires, zone) == [spring_forward + timedelta(days=offset) for offset in (-1, 1, 2)]
    assert all(tick.astimezone(ZoneInfo(zone)).hour == 2 for tick in fires)


@pytest.mark.parametrize(
    ("zone", "spring_forward"), [("Europe/Berlin", date(2026, 3, 29)), ("America/New_York", date(2026, 3, 8))]
)
def test_a_daily_job_keeps_its_local_time_on_both_sides_of_the_change(
    zone: str, spring_forward: date
) -> None:
    start, end = around(spring_forward, zone)

    fires = fires_between(CronTicks("0 9 * * *", zone), start, end)

    assert [tick.astimezone(ZoneInfo(zone)).hour for tick in fires] == [9, 9, 9, 9]
    assert fires[1] - fires[0] == timedelta(hours=23)  # the short day


def test_an_hourly_job_skips_the_second_pass_of_the_repeated_hour() -> None:
    start = datetime(2026, 10, 25, 0, tzinfo=UTC)  # 02:00 CEST, the first pass

    fires = fires_between(CronTicks("30 * * * *", "Europe/Berlin"), start, start + timedelta(hours=4))

    assert [tick.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M %Z") for tick in fires] == [
        "02:30 CEST",
        "03:30 CET",
        "04:30 CET",
    ]


def test_the_tick_before_a_moment_in_the_second_pass_is_the_first_occurrence() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    second_pass = datetime(2026, 10, 25, 2, 45, fold=1, tzinfo=berlin)

    latest = CronTicks("30 2 * * *", "Europe/Berlin").at_or_before(second_pass)

    assert latest == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST


def test_an_interval_counts_elapsed_time_across_a_daylight_saving_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 3, 29, 0, 30, tzinfo=berlin).astimezone(UTC)

    fires = fires_between(IntervalTicks(timedelta(hours=1)), start, start + timedelta(hours=4))

    assert [later - earlier for earlier, later in itertools.pairwise(fires)] == [timedelta(hours=1)] * 3
    assert [tick.astimezone(berlin).hour for tick in fires] == [1, 3, 4, 5]


def test_interval_ticks_fall_on_multiples_of_the_interval_since_the_epoch() -> None:
    ticks = IntervalTicks(timedelta(minutes=5))
    moment = datetime(2026, 5, 4, 10, 7, 30, 250, tzinfo=UTC)

    assert ticks.after(moment) == datetime(2026, 5, 4, 10, 10, tzinfo=UTC)
    assert ticks.at_or_before(moment) == datetime(2026, 5, 4, 10, 5, tzinfo=UTC)
    assert ticks.at_or_before(datetime(2026, 5, 4, 10, 5, tzinfo=UTC)) == datetime(
        2026, 5, 4, 10, 5, tzinfo=UTC
    )


def test_counting_ticks_stops_at_the_limit() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)

    assert IntervalTicks(timedelta(seconds=2)).count(start, start + timedelta(seconds=10), limit=100) == 5
    assert IntervalTicks(timedelta(seconds=2)).count(start, start + timedelta(days=1), limit=100) == 100
    assert CronTicks("* * * * *", "UTC").count(start, start + timedelta(minutes=5), limit=100) == 5
    assert CronTicks("* * * * *", "UTC").count(start, start + timedelta(days=1), limit=7) == 7

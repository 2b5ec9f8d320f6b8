"""Declaring schedules: ``jobs.schedule(...)`` checks everything once, and names the schedule when not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from cloudjobs import CloudJobs, InvalidScheduleError
from cloudjobs.errors import ConfigurationError
from cloudjobs.scheduling.definition import CatchUp, Overlap


class Report(BaseModel):
    day: str = "today"


def test_a_cron_schedule_is_plain_data_with_its_defaults(jobs: CloudJobs) -> None:
    schedule = jobs.schedule(
        "nightly-report",
        cron="0 2 * * *",
        tz="Europe/Berlin",
        job_type="report",
        payload={"a": 1},
        overlap="skip",
    )

    assert (schedule.name, schedule.cron, schedule.every, schedule.tz) == (
        "nightly-report",
        "0 2 * * *",
        None,
        "Europe/Berlin",
    )
    assert schedule.payload == {"a": 1}
    assert schedule.overlap is Overlap.SKIP
    assert schedule.catch_up is CatchUp.SKIP
    assert schedule.misfire_grace == timedelta(seconds=60)
    assert schedule.expression == "0 2 * * *"
    assert jobs.schedules == [schedule]


def test_an_interval_schedule_runs_in_utc_and_reads_as_every(jobs: CloudJobs) -> None:
    schedule = jobs.schedule("sweep", every=timedelta(minutes=90), job_type="sweep")

    assert (schedule.every, schedule.tz, schedule.expression) == (timedelta(minutes=90), "UTC", "every 1h30m")
    assert schedule.payload == {}
    assert schedule.overlap is Overlap.ALLOW


def test_every_also_takes_seconds(jobs: CloudJobs) -> None:
    assert jobs.schedule("fast", every=2, job_type="sweep").every == timedelta(seconds=2)


def test_a_fire_job_id_is_the_schedule_name_and_the_tick_in_utc(jobs: CloudJobs) -> None:
    schedule = jobs.schedule("nightly", cron="0 2 * * *", tz="Europe/Berlin", job_type="report")

    assert schedule.job_id(datetime(2026, 3, 29, 0, 0, tzinfo=UTC)) == "schedule:nightly@2026-03-29T00:00:00Z"


def test_a_payload_is_checked_against_a_registered_job_type(jobs: CloudJobs) -> None:
    @jobs.job("report")
    def report(payload: Report) -> None: ...

    schedule = jobs.schedule("nightly", cron="0 2 * * *", job_type=report, payload=Report(day="monday"))

    assert schedule.job_type == "report"
    assert schedule.payload == {"day": "monday"}
    with pytest.raises(InvalidScheduleError) as raised:
        jobs.schedule("broken", cron="0 2 * * *", job_type="report", payload={"day": 3})
    assert raised.value.schedule == "broken"
    assert raised.value.setting == "payload"


@pytest.mark.parametrize(
    ("options", "setting", "words"),
    [
        ({"cron": "0 2 * *"}, "cron", "five fields"),
        ({"cron": "0 2 * * * *"}, "cron", "five fields"),
        ({"cron": "61 2 * * *"}, "cron", "not a valid expression"),
        ({"cron": "R 2 * * *"}, "cron", "not a valid expression"),
        ({"cron": "@daily"}, "cron", "five fields"),
        ({"cron": "0 0 30 2 *"}, "cron", "never fires"),
        ({"cron": "0 2 * * *", "tz": "Mars/Olympus"}, "tz", "unknown time zone"),
        ({"cron": "0 2 * * *", "every": 60}, None, "not both or neither"),
        ({}, None, "not both or neither"),
        ({"every": 0}, "every", "positive whole number"),
        ({"every": timedelta(seconds=-5)}, "every", "positive whole number"),
        ({"every": 1.5}, "every", "positive whole number"),
        ({"every": "5m"}, "every", "seconds or a timedelta"),
        ({"every": 60, "tz": "Europe/Berlin"}, "tz", "no time zone"),
        ({"every": 60, "overlap": "never"}, "overlap", "'allow' or 'skip'"),
        ({"every": 60, "catch_up": "all"}, "catch_up", "'skip' or 'once'"),
        ({"every": 60, "misfire_grace": 0.5}, None, "at least one second"),
    ],
)
def test_a_malformed_schedule_is_refused_naming_it(
    jobs: CloudJobs, options: dict[str, Any], setting: str | None, words: str
) -> None:
    with pytest.raises(InvalidScheduleError) as raised:
        jobs.schedule("nightly", job_type="report", **options)

    assert raised.value.schedule == "nightly"
    assert raised.value.setting == setting
    assert "schedule 'nightly'" in str(raised.value)
    assert words in str(raised.value)
    assert isinstance(raised.value, ConfigurationError)
    assert jobs.schedules == []


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 65])
def test_a_malformed_name_is_refused(jobs: CloudJobs, name: str) -> None:
    with pytest.raises(InvalidScheduleError, match="letters, digits"):
        jobs.schedule(name, every=60, job_type="report")


def test_a_name_declared_twice_is_refused(jobs: CloudJobs) -> None:
    jobs.schedule("nightly", cron="0 2 * * *", job_type="report")

    with pytest.raises(InvalidScheduleError, match="declared already") as raised:
        jobs.schedule("nightly", every=60, job_type="other")

    assert raised.value.schedule == "nightly"
    assert len(jobs.schedules) == 1


def test_overlap_skip_needs_a_job_type_that_keeps_a_status_record(jobs: CloudJobs) -> None:
    @jobs.job("plain")
    def plain(payload: dict[str, object]) -> None: ...

    jobs.schedule("plain-skip", every=60, job_type="plain", overlap="skip")

    with pytest.raises(InvalidScheduleError, match="track_status=True or idempotent=True") as raised:
        jobs.scheduler()
    assert (raised.value.schedule, raised.value.setting) == ("plain-skip", "overlap")


def test_a_payload_is_checked_again_when_its_job_type_is_registered_after_the_schedule(
    jobs: CloudJobs,
) -> None:
    jobs.schedule("early", every=60, job_type="report", payload={"day": 3})

    @jobs.job("report")
    def report(payload: Report) -> None: ...

    with pytest.raises(InvalidScheduleError, match="fails its schema") as raised:
        jobs.scheduler()
    assert raised.value.schedule == "early"

"""``cloudjobs schedules list`` and the scheduler command's refusals, on an app with a manual clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from cloudjobs import CloudJobs, ManualClock, MemoryBackend, MemoryIdempotencyStore, Settings
from cloudjobs.cli.exit_codes import EXIT_OK, EXIT_USAGE
from cloudjobs.cli.main import cli, main
from tests.unit import cli_app

APP = "tests.unit.cli_app:jobs"
NOW = datetime(2026, 3, 27, 10, 0, tzinfo=UTC)


def scheduled_app(*, with_store: bool = True) -> CloudJobs:
    clock = ManualClock(NOW)
    jobs = CloudJobs(
        settings=Settings(_env_file=None),
        backend=MemoryBackend("cli-schedules", clock=clock),
        clock=clock,
        idempotency_store=MemoryIdempotencyStore(clock=clock) if with_store else None,
    )
    jobs.schedule("nightly-report", cron="0 2 * * *", tz="Europe/Berlin", job_type="report")
    jobs.schedule("sweep", every=90, job_type="sweep")
    return jobs


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> CloudJobs:
    jobs = scheduled_app()
    monkeypatch.setattr(cli_app, "jobs", jobs)
    return jobs


def test_schedules_list_shows_each_schedule_with_its_next_fires_in_its_time_zone(app: CloudJobs) -> None:
    result = CliRunner().invoke(cli, ["schedules", "list", APP])

    assert result.exit_code == EXIT_OK
    lines = [line.split("  ") for line in result.output.splitlines()]
    cells = [[cell.strip() for cell in line if cell.strip()] for line in lines]
    assert cells == [
        ["NAME", "EXPRESSION", "TIME ZONE", "NEXT FIRES", "LAST FIRE", "MODE"],
        ["nightly-report", "0 2 * * *", "Europe/Berlin", "2026-03-28 02:00:00+01:00", "-", "self-hosted"],
        ["2026-03-30 02:00:00+02:00"],  # 29 March has no 02:00 in Berlin: skipped
        ["2026-03-31 02:00:00+02:00"],
        ["sweep", "every 1m30s", "UTC", "2026-03-27 10:01:30+00:00", "-", "self-hosted"],
        ["2026-03-27 10:03:00+00:00"],
        ["2026-03-27 10:04:30+00:00"],
    ]


def test_schedules_list_shows_the_last_fire_once_a_scheduler_fired(app: CloudJobs) -> None:
    app.scheduler().run_pending(datetime(2026, 3, 27, 10, 1, 30, tzinfo=UTC))

    result = CliRunner().invoke(cli, ["schedules", "list", APP, "--count", "1"])

    assert result.exit_code == EXIT_OK
    [_, nightly, sweep] = result.output.splitlines()
    assert nightly.split()[-2:] == ["-", "self-hosted"]
    assert "2026-03-27 10:01:30+00:00  self-hosted" in sweep


def test_schedules_list_as_json_carries_times_the_last_job_and_the_mode(app: CloudJobs) -> None:
    app.scheduler().run_pending(datetime(2026, 3, 27, 10, 1, 30, tzinfo=UTC))

    result = CliRunner().invoke(cli, ["schedules", "list", APP, "--json", "--count", "2"])

    rows = json.loads(result.output)
    assert [row["name"] for row in rows] == ["nightly-report", "sweep"]
    assert rows[0]["next_fires"] == ["2026-03-28T02:00:00+01:00", "2026-03-30T02:00:00+02:00"]
    assert rows[0]["last_fire"] is None
    assert rows[1]["last_fire"] == "2026-03-27T10:01:30+00:00"
    assert rows[1]["last_job_id"] == "schedule:sweep@2026-03-27T10:01:30Z"
    assert {row["mode"] for row in rows} == {"self-hosted"}
    assert rows[0]["overlap"] == "allow"


def test_schedules_list_without_a_store_shows_the_last_fire_as_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli_app, "jobs", scheduled_app(with_store=False))

    result = CliRunner().invoke(cli, ["schedules", "list", APP, "--count", "1"])

    assert result.exit_code == EXIT_OK
    assert [line.split()[-2] for line in result.output.splitlines()[1:]] == ["unknown", "unknown"]


def test_the_scheduler_refuses_an_app_without_schedules(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_app, "jobs", CloudJobs(settings=Settings(_env_file=None)))

    code = main(["scheduler", APP])

    assert code == EXIT_USAGE
    assert capsys.readouterr().err.startswith(
        "cloudjobs: configuration error: tests.unit.cli_app:jobs declares no"
    )


def test_the_scheduler_refuses_a_schedule_that_cannot_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = scheduled_app()
    jobs.schedule("overlapping", every=60, job_type="untracked", overlap="skip")
    monkeypatch.setattr(cli_app, "jobs", jobs)

    code = main(["scheduler", APP, "--once"])

    assert code == EXIT_USAGE
    assert "schedule 'overlapping': overlap='skip' reads the previous run's status" in capsys.readouterr().err

"""The command line in-process: argument parsing, error lines and exit codes, output rendering.

Commands that reach a queue use ``--app tests.unit.cli_app:jobs`` (a memory backend); the real
processes against the moto server are in tests/integration/test_cli.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from enum import Enum

import pytest
from click.testing import CliRunner

from cloudjobs import CloudJobs, MemoryBackend
from cloudjobs.backends.sqs import wrap_aws_errors
from cloudjobs.cli import main
from cloudjobs.cli.dlq import render_redrive
from cloudjobs.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from cloudjobs.cli.main import cli, describe
from cloudjobs.cli.options import parse_duration
from cloudjobs.cli.output import MAX_CELL_WIDTH, format_age, render_json, render_table
from cloudjobs.cli.stats import repeat_until_interrupted
from cloudjobs.dlq import RedriveReport, RedriveStop
from cloudjobs.envelope import decode
from cloudjobs.errors import (
    BackendError,
    BackendUnavailableError,
    CloudjobsError,
    ConfigurationError,
    CredentialsError,
    InvalidDelayError,
    PayloadValidationError,
    QueueNotFoundError,
)
from tests.unit import cli_app

APP = "tests.unit.cli_app:jobs"


@pytest.fixture(autouse=True)
def _retry_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Operator commands set AWS retry defaults in their process; keep this one's environment as it was.
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")


def _one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# -- durations --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("1.5h", timedelta(minutes=90)),
        (" 2D ", timedelta(days=2)),
    ],
)
def test_durations_read_a_number_and_a_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d", "7 d", "7w", "-1d", "1d2h", "seven days"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_a_malformed_older_than_is_a_usage_error_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dlq", "purge", "--older-than", "3y", "--yes"])

    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_USAGE
    assert line.startswith("cloudjobs dlq purge: ")
    assert "'3y' is not a duration" in line


# -- output -----------------------------------------------------------------------------------------


def test_a_table_aligns_its_columns_and_shows_missing_values_as_a_dash() -> None:
    table = render_table(["ID", "REASON"], [["a", "poison"], ["longer-id", None]])

    assert table.splitlines() == [
        "ID         REASON",
        "a          poison",
        "longer-id  -",
    ]


def test_a_table_keeps_each_row_on_one_line_and_cuts_long_cells() -> None:
    table = render_table(["ERROR"], [["line one\nline two"], ["x" * 500]])

    lines = table.splitlines()
    assert lines[1] == "line one line two"
    assert len(lines[2]) == MAX_CELL_WIDTH
    assert lines[2].endswith("…")


def test_a_table_shows_times_to_the_second_and_durations_in_units() -> None:
    moment = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)

    table = render_table(["AT", "AGE"], [[moment, timedelta(minutes=65)]])

    assert table.splitlines()[1] == "2024-05-01T12:30:15+00:00  1h 05m"


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (None, "unknown"),
        (timedelta(seconds=42), "42s"),
        (timedelta(seconds=125), "2m 05s"),
        (timedelta(hours=3, minutes=7), "3h 07m"),
        (timedelta(days=8, hours=1), "8d 01h"),
    ],
)
def test_ages_read_in_the_largest_fitting_units(age: timedelta | None, expected: str) -> None:
    assert format_age(age) == expected


class _Colour(Enum):
    RED = "red"


def test_json_output_turns_times_durations_and_enums_into_plain_values() -> None:
    document = {
        "at": datetime(2024, 5, 1, tzinfo=UTC),
        "age": timedelta(minutes=2),
        "colour": _Colour.RED,
        "items": (1, None),
    }

    assert json.loads(render_json(document)) == {
        "at": "2024-05-01T00:00:00+00:00",
        "age": 120.0,
        "colour": "red",
        "items": [1, None],
    }


# -- the group and its errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["worker"],
        ["demo"],
        ["provision"],
        ["enqueue"],
        ["dlq"],
        ["dlq", "list"],
        ["dlq", "redrive"],
        ["dlq", "purge"],
        ["cancel"],
        ["stats"],
        ["scheduler"],
        ["schedules"],
        ["schedules", "list"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])

    assert result.exit_code == EXIT_OK
    assert result.output.startswith("Usage: cloudjobs")


def test_the_group_help_documents_the_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["--help"])

    assert "Exit codes:" in result.output
    for line in ("0  success", "1  an operation failed", "2  usage or configuration error"):
        assert line in result.output


def test_no_command_prints_the_help_and_fails_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([])

    captured = capsys.readouterr()
    assert code in (EXIT_OK, EXIT_USAGE)  # click 8.1 exits 0 here, click ≥ 8.2 reports a usage error
    assert "Commands:" in captured.out + captured.err


def test_an_unknown_option_is_a_usage_error_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["enqueue", "greet", "{}", "--bogus"])

    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_USAGE
    assert line.startswith("cloudjobs enqueue: No such option")
    assert "--bogus" in line
    assert line.endswith("(see 'cloudjobs enqueue --help')")


def test_a_payload_that_is_not_json_is_a_usage_error_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["enqueue", "greet", "{name: x}", "--app", APP])

    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert code == EXIT_USAGE
    assert "Invalid value for 'PAYLOAD': not valid JSON" in line
    assert captured.out == ""


def test_purge_refuses_without_yes(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dlq", "purge", "--type", "greet"])

    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_USAGE
    assert "refusing to delete messages without --yes" in line


def test_no_configured_queue_is_a_configuration_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["enqueue", "greet", "{}"])

    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_USAGE
    assert line.startswith("cloudjobs: configuration error: CLOUDJOBS_QUEUE_URL: no queue configured")


def test_a_malformed_setting_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLOUDJOBS_WAIT_TIME_SECONDS", "forever")

    code = main(["enqueue", "greet", "{}"])

    assert code == EXIT_USAGE
    assert "CLOUDJOBS_WAIT_TIME_SECONDS" in _one_line(capsys.readouterr().err)


def test_an_app_reference_that_does_not_import_is_a_configuration_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["enqueue", "greet", "{}", "--app", "tests.unit.no_such_module:jobs"])

    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_USAGE
    assert "cannot import 'tests.unit.no_such_module'" in line


@pytest.mark.parametrize(
    ("error", "code", "text"),
    [
        (CredentialsError("no AWS credentials found: x"), EXIT_USAGE, "no AWS credentials found: x"),
        (
            ConfigurationError("bad", setting="CLOUDJOBS_X"),
            EXIT_USAGE,
            "configuration error: CLOUDJOBS_X: bad",
        ),
        (
            PayloadValidationError("name: missing", job_name="greet"),
            EXIT_USAGE,
            "invalid input: name: missing",
        ),
        (
            InvalidDelayError("no delay on FIFO", delay=timedelta(seconds=1), queue="q.fifo"),
            EXIT_USAGE,
            "invalid input: no delay on FIFO",
        ),
        (QueueNotFoundError(queue="orders"), EXIT_FAILED, "queue 'orders' does not exist at the configured"),
        (
            BackendUnavailableError("SQS endpoint unreachable: refused"),
            EXIT_FAILED,
            "SQS endpoint unreachable",
        ),
        (BackendError("throttled", code="Throttling"), EXIT_FAILED, "BackendError: throttled"),
    ],
)
def test_expected_errors_map_to_a_message_and_an_exit_code(
    error: CloudjobsError, code: int, text: str
) -> None:
    message, exit_code = describe(error)

    assert exit_code == code
    assert message.startswith(text)


def test_a_wrapped_botocore_error_still_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import botocore.exceptions

    @cli.command("explode", hidden=True)
    def explode() -> None:
        with wrap_aws_errors("orders"):
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1/\nsecond line")

    try:
        code = main(["explode"])
    finally:
        cli.commands.pop("explode")

    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_FAILED
    assert line.startswith("cloudjobs: SQS endpoint unreachable: Could not connect")


# -- commands on the memory backend ----------------------------------------------------------------


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> tuple[CloudJobs, MemoryBackend]:
    """A fresh ``tests.unit.cli_app:jobs`` for this test."""
    jobs, backend = cli_app.build()
    monkeypatch.setattr(cli_app, "jobs", jobs)
    monkeypatch.setattr(cli_app, "backend", backend)
    return jobs, backend


def _sent_bodies(backend: MemoryBackend) -> list[str]:
    deliveries = backend.receive(max_messages=10, wait=timedelta(0))
    backend.delete([delivery.receipt for delivery in deliveries])
    return [delivery.body for delivery in deliveries]


def test_enqueue_sends_the_job_and_prints_its_id(app: tuple[CloudJobs, MemoryBackend]) -> None:
    result = CliRunner().invoke(cli, ["enqueue", "greet", '{"name": "Ada"}', "--app", APP])

    envelope = decode(_sent_bodies(app[1])[0])
    assert result.exit_code == EXIT_OK
    assert result.output == f"enqueued greet job {envelope.id}\n"
    assert (envelope.type, envelope.payload) == ("greet", {"name": "Ada"})


def test_enqueue_json_output_carries_the_job_id_type_and_delay(app: tuple[CloudJobs, MemoryBackend]) -> None:
    result = CliRunner().invoke(
        cli, ["enqueue", "unregistered", "[1, 2]", "--app", APP, "--json", "--allow-unregistered"]
    )

    envelope = decode(_sent_bodies(app[1])[0])
    assert result.exit_code == EXIT_OK
    assert json.loads(result.output) == {"job_id": envelope.id, "type": "unregistered", "delay_seconds": 0}
    assert envelope.payload == [1, 2]


def test_enqueue_validates_a_registered_payload_and_sends_nothing_when_it_fails(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["enqueue", "greet", '{"nom": "Ada"}', "--app", APP])

    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_USAGE
    assert line.startswith("cloudjobs: invalid input: ")
    assert _sent_bodies(app[1]) == []


def test_enqueue_refuses_a_type_the_app_does_not_register_and_lists_the_registered_ones(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["enqueue", "gret", '{"name": "Ada"}', "--app", APP])

    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_USAGE
    assert line.startswith(
        "cloudjobs enqueue: Invalid value for TYPE: no handler registered for job type 'gret'"
    )
    assert "(did you mean 'greet'? registered: explode, greet)" in line
    assert "--allow-unregistered" in line
    assert _sent_bodies(app[1]) == []


def test_enqueue_sends_an_unregistered_type_when_allowed_unless_the_app_refuses_them(
    app: tuple[CloudJobs, MemoryBackend], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["enqueue", "billing.charge", "{}", "--app", APP, "--allow-unregistered"]) == EXIT_OK
    assert [decode(body).type for body in _sent_bodies(app[1])] == ["billing.charge"]
    capsys.readouterr()

    refusing, backend = cli_app.build(refuse_unregistered=True)
    monkeypatch.setattr(cli_app, "jobs", refusing)
    code = main(["enqueue", "billing.charge", "{}", "--app", APP, "--allow-unregistered"])

    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_USAGE
    assert line.startswith("cloudjobs: invalid input: no handler registered for job type 'billing.charge'")
    assert _sent_bodies(backend) == []


def test_enqueue_refuses_a_delay_past_a_year_and_a_day(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["enqueue", "greet", '{"name": "Ada"}', "--delay", str(366 * 86_400 + 1), "--app", APP])

    assert code == EXIT_USAGE
    assert "--delay" in _one_line(capsys.readouterr().err)
    assert _sent_bodies(app[1]) == []


def _run(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the command line in-process like the script does; the exit code and standard output."""
    code = main(arguments)
    captured = capsys.readouterr()
    assert captured.err == ""
    return code, captured.out


def test_stats_show_the_depths_and_exit_zero_when_healthy(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    jobs, _ = app
    jobs.enqueue("greet", {"name": "Ada"})
    jobs.enqueue("greet", {"name": "Bob"}, delay=60)

    code, output = _run(["stats", "--app", APP], capsys)

    assert code == EXIT_OK
    assert output.splitlines() == [
        "QUEUE      VISIBLE  IN FLIGHT  DELAYED  DLQ  OLDEST",
        "cli-tests  1        0          1        0    unknown",
        "healthy",
    ]


def test_stats_exit_one_with_a_finding_when_the_dlq_holds_messages(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    jobs, _ = app
    jobs.enqueue("explode", {})
    jobs.drain()

    code, output = _run(["stats", "--app", APP, "--json"], capsys)

    assert code == EXIT_FAILED
    assert json.loads(output) == {
        "queue": "cli-tests",
        "visible": 0,
        "in_flight": 0,
        "delayed": 0,
        "dlq_depth": 1,
        "oldest_message_age_seconds": None,
        "healthy": False,
        "findings": [
            {
                "name": "dlq_depth",
                "value": 1,
                "limit": 0,
                "message": "dead-letter queue holds 1 messages (limit 0)",
            }
        ],
    }


def test_a_human_stats_check_names_what_is_unhealthy(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    jobs, _ = app
    jobs.enqueue("explode", {})
    jobs.drain()

    code, output = _run(["stats", "--app", APP], capsys)

    assert code == EXIT_FAILED
    assert output.splitlines()[-1] == "UNHEALTHY: dead-letter queue holds 1 messages (limit 0)"


def test_watching_repeats_the_check_until_ctrl_c_and_returns_the_last_result() -> None:
    results = iter([EXIT_OK, EXIT_OK, EXIT_FAILED])
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        if len(pauses) == 2:
            raise KeyboardInterrupt
        pauses.append(seconds)

    code = repeat_until_interrupted(lambda: next(results), interval=2.5, pause=pause)

    assert code == EXIT_FAILED
    assert pauses == [2.5, 2.5]


def test_cancel_marks_a_job_without_a_record(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = _run(["cancel", "job-1", "--app", APP, "--json"], capsys)

    assert code == EXIT_OK
    assert json.loads(output) == {"job_id": "job-1", "outcome": "marked", "status": None}


def test_a_cancelled_pending_job_never_runs(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    jobs, _ = app
    job_id = jobs.enqueue("greet", {"name": "Ada"})

    code, output = _run(["cancel", job_id, "--app", APP], capsys)
    report = jobs.drain()

    assert code == EXIT_OK
    assert job_id in output
    assert report.completed == 0
    status = jobs.status(job_id)
    assert status is not None
    assert status.state.value == "cancelled"


def test_cancelling_a_job_that_already_succeeded_fails(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    jobs, _ = app
    job_id = jobs.enqueue("greet", {"name": "Ada"})
    jobs.drain()

    code, output = _run(["cancel", job_id, "--app", APP, "--json"], capsys)

    assert code == EXIT_FAILED
    assert json.loads(output) == {"job_id": job_id, "outcome": "already_finished", "status": "completed"}


def _dead_letter_one(jobs: CloudJobs) -> str:
    job_id = jobs.enqueue("explode", {"n": 1})
    report = jobs.drain()
    assert report.dead_lettered == 1
    return job_id


def test_dlq_list_shows_the_reason_and_error_as_a_table_and_as_json(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = _dead_letter_one(app[0])

    table_code, table = _run(["dlq", "list", "--app", APP], capsys)
    json_code, document = _run(["dlq", "list", "--app", APP, "--json"], capsys)

    assert (table_code, json_code) == (EXIT_OK, EXIT_OK)
    header, row = table.splitlines()
    assert header.split()[:3] == ["JOB", "ID", "TYPE"]
    assert row.startswith(f"{job_id}  explode  permanent_error  1 ")
    assert row.endswith("PermanentError: boom")
    [listed] = json.loads(document)
    assert {key: listed[key] for key in ("job_id", "type", "reason", "attempts", "redrive_count")} == {
        "job_id": job_id,
        "type": "explode",
        "reason": "permanent_error",
        "attempts": 1,
        "redrive_count": 0,
    }
    assert decode(listed["body"]).id == job_id


def test_dlq_list_says_so_when_nothing_matches(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    _dead_letter_one(app[0])

    code, output = _run(["dlq", "list", "--type", "greet", "--app", APP], capsys)

    assert code == EXIT_OK
    assert output == "no matching messages in the dead-letter queue\n"


def test_a_dry_run_redrive_shows_what_would_move_and_moves_nothing(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    jobs, _ = app
    job_id = _dead_letter_one(jobs)

    code, output = _run(["dlq", "redrive", "--dry-run", "--app", APP], capsys)

    assert code == EXIT_OK
    assert output.splitlines() == [
        "JOB ID" + " " * (len(job_id) - 4) + "TYPE     REASON",
        f"{job_id}  explode  permanent_error",
        "",
        "would move 1, skipped 0, failed 0",
    ]
    assert jobs.stats().dlq_depth == 1


def test_a_redrive_puts_the_job_back_on_the_queue(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    jobs, backend = app
    job_id = _dead_letter_one(jobs)

    code, output = _run(["dlq", "redrive", "--id", job_id, "--rate", "50", "--app", APP, "--json"], capsys)

    assert code == EXIT_OK
    assert json.loads(output) == {
        "moved": 1,
        "skipped": 0,
        "failed": 0,
        "dry_run": False,
        "job_ids": [job_id],
        "errors": [],
        "returned": 0,
        "stop": "drained",
    }
    [body] = _sent_bodies(backend)
    assert decode(body).id == job_id


def test_a_redrive_that_met_its_own_copies_says_how_many_came_back_and_why_it_stopped() -> None:
    report = RedriveReport(moved=3, skipped=0, failed=0, returned=2, stop=RedriveStop.MET_OWN_MESSAGES)

    assert render_redrive(report).splitlines() == [
        "moved 3, skipped 0, failed 0",
        "2 moved came back to the dead-letter queue while it ran (failed again): left there, not moved twice",
        "stopped on meeting messages this redrive had moved itself",
    ]


def test_purge_with_older_than_keeps_recent_failures_and_without_filters_empties_the_dlq(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    jobs, _ = app
    _dead_letter_one(jobs)

    old_code, old = _run(["dlq", "purge", "--older-than", "1d", "--yes", "--app", APP, "--json"], capsys)
    all_code, everything = _run(["dlq", "purge", "--yes", "--app", APP], capsys)

    assert (old_code, json.loads(old)) == (EXIT_OK, {"purged": 0})
    assert (all_code, everything) == (EXIT_OK, "purged 1 messages from the dead-letter queue\n")
    assert jobs.stats().dlq_depth == 0


def test_enqueue_with_unique_for_sends_one_job_and_prints_its_id_for_the_repeat(
    app: tuple[CloudJobs, MemoryBackend],
) -> None:
    arguments = [
        "enqueue",
        "greet",
        '{"name": "Ada"}',
        "--app",
        APP,
        "--unique-for",
        "600",
        "--unique-key",
        "ada",
    ]
    first = CliRunner().invoke(cli, [*arguments, "--json"])
    repeat = CliRunner().invoke(cli, [*arguments, "--json"])

    [body] = _sent_bodies(app[1])
    assert first.exit_code == repeat.exit_code == EXIT_OK
    assert json.loads(first.output)["job_id"] == json.loads(repeat.output)["job_id"] == decode(body).id


def test_enqueue_refuses_a_unique_key_without_a_window(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["enqueue", "greet", '{"name": "Ada"}', "--app", APP, "--unique-key", "ada"])

    assert code == EXIT_USAGE
    assert "--unique-key needs --unique-for" in capsys.readouterr().err
    assert _sent_bodies(app[1]) == []


def test_enqueue_with_track_status_marks_the_envelope(app: tuple[CloudJobs, MemoryBackend]) -> None:
    result = CliRunner().invoke(
        cli, ["enqueue", "unregistered", "{}", "--app", APP, "--allow-unregistered", "--track-status"]
    )

    envelope = decode(_sent_bodies(app[1])[0])
    assert result.exit_code == EXIT_OK
    assert envelope.track_status is True
    assert app[0].status(envelope.id) is not None

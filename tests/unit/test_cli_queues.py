"""The command line on an app with several queues: ``--queue`` on enqueue, stats and dlq."""

from __future__ import annotations

import json

import pytest

from cloudjobs import CloudJobs, MemoryBackend
from cloudjobs.cli import main
from cloudjobs.cli.exit_codes import EXIT_OK
from tests.unit import cli_app

APP = "tests.unit.cli_app:jobs"


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> tuple[CloudJobs, MemoryBackend]:
    """A fresh ``tests.unit.cli_app:jobs`` with a ``bulk`` queue; returns the app and that queue."""
    bulk = MemoryBackend("cli-bulk", max_receive_count=1)
    jobs, backend = cli_app.build(bulk=bulk)
    monkeypatch.setattr(cli_app, "jobs", jobs)
    monkeypatch.setattr(cli_app, "backend", backend)
    return jobs, bulk


def _run(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(arguments)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_enqueue_sends_to_the_queue_and_tenant_given(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    jobs, bulk = app

    code, _, _ = _run(
        ["enqueue", "greet", '{"name": "Ada"}', "--queue", "bulk", "--tenant", "acme", "--app", APP], capsys
    )

    [message] = bulk.messages()
    assert code == EXIT_OK
    assert json.loads(message.body)["type"] == "greet"
    assert message.group_id == "acme"
    assert jobs.stats().visible == 0


def test_enqueue_to_a_queue_the_app_lacks_fails_naming_the_known_ones(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["enqueue", "greet", '{"name": "Ada"}', "--queue", "bluk", "--app", APP], capsys)

    assert code != EXIT_OK
    assert "did you mean 'bulk'" in err
    assert app[1].messages() == []


def test_stats_read_one_queue_or_all_of_them(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    jobs, _ = app
    jobs.enqueue("export", {"account": "a"})
    jobs.enqueue("export", {"account": "b"})

    _, one, _ = _run(["stats", "--queue", "bulk", "--json", "--app", APP], capsys)
    _, every, _ = _run(["stats", "--all-queues", "--json", "--app", APP], capsys)
    _, table, _ = _run(["stats", "--all-queues", "--app", APP], capsys)

    assert json.loads(one)["visible"] == 2
    assert [(document["queue"], document["visible"]) for document in json.loads(every)] == [
        ("cli-tests", 0),
        ("cli-bulk", 2),
    ]
    assert "cli-tests" in table
    assert "cli-bulk" in table


def test_the_dlq_commands_act_on_the_queue_named(
    app: tuple[CloudJobs, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    jobs, _ = app
    jobs.enqueue("export", {"account": "a"})
    jobs.drain()

    _, default_list, _ = _run(["dlq", "list", "--json", "--app", APP], capsys)
    _, bulk_list, _ = _run(["dlq", "list", "--queue", "bulk", "--json", "--app", APP], capsys)
    refused, _, refusal = _run(["dlq", "purge", "--yes", "--app", APP], capsys)
    purged, out, _ = _run(["dlq", "purge", "--yes", "--queue", "bulk", "--json", "--app", APP], capsys)

    assert json.loads(default_list) == []
    assert [(job["type"], job["reason"]) for job in json.loads(bulk_list)] == [("export", "permanent_error")]
    assert refused != EXIT_OK
    assert "name the one" in refusal
    assert (purged, json.loads(out)) == (EXIT_OK, {"purged": 1})
    assert jobs.stats(queue="bulk").dlq_depth == 0

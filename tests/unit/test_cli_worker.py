"""``cloudjobs worker``'s queue options in-process: ``--queue`` with weights or in strict order,
``--queue-concurrency``, and the one-line usage errors (the real process is in
tests/integration/test_worker_process.py)."""

from __future__ import annotations

from typing import Any

import pytest

from cloudjobs.cli import main
from cloudjobs.cli.exit_codes import EXIT_OK, EXIT_USAGE
from cloudjobs.cli.worker import parse_queue_concurrency, parse_queue_options, worker
from cloudjobs.runtimes.worker import ShutdownReport

APP = "tests.unit.cli_app:jobs"


def test_queues_with_weights_share_by_weight_and_without_keep_the_order_given() -> None:
    assert parse_queue_options(["critical=6", "default=3", "bulk=1"]) == {
        "critical": 6,
        "default": 3,
        "bulk": 1,
    }
    assert parse_queue_options(["critical", "default"]) == ["critical", "default"]
    assert parse_queue_options([]) is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["critical=6", "default"], "not a mix"),
        (["critical=0"], "the weight of queue 'critical' must be a positive integer, not '0'"),
        (["critical=high"], "not 'high'"),
        (["critical", "critical"], "named twice"),
    ],
    ids=["mixed", "zero", "not-a-number", "twice"],
)
def test_malformed_queue_options_are_refused(values: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_queue_options(values)


def test_queue_concurrency_options_read_as_caps_by_queue() -> None:
    assert parse_queue_concurrency(["bulk=4", "default=2"]) == {"bulk": 4, "default": 2}
    assert parse_queue_concurrency([]) is None
    with pytest.raises(ValueError, match="is not NAME=N"):
        parse_queue_concurrency(["bulk"])


def test_the_worker_command_reads_repeated_queue_options() -> None:
    context = worker.make_context(
        "worker", ["app:jobs", "--queue", "critical=6", "--queue", "bulk=1", "--queue-concurrency", "bulk=4"]
    )

    assert context.params["queues"] == {"critical": 6, "bulk": 1}
    assert context.params["queue_concurrency"] == {"bulk": 4}


def test_mixing_weighted_and_ordered_queues_is_a_usage_error_on_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["worker", APP, "--queue", "critical=6", "--queue", "default"])

    lines = capsys.readouterr().err.splitlines()
    assert code == EXIT_USAGE
    assert len(lines) == 1
    assert lines[0].startswith("cloudjobs worker: Invalid value for '--queue'")
    assert "not a mix" in lines[0]


def test_the_worker_command_hands_its_queues_and_caps_to_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[dict[str, Any]] = []

    class _Worker:
        def __init__(self, app: object, **options: Any) -> None:
            built.append(options)

        def run(self) -> ShutdownReport:
            return ShutdownReport()

    monkeypatch.setattr("cloudjobs.runtimes.worker.Worker", _Worker)
    # The command configures logging for its process: keep this one's as it is.
    monkeypatch.setattr("cloudjobs.logs.configure_logging", lambda **_: None)

    code = main(["worker", APP, "--queue", "default", "--queue", "bulk", "--queue-concurrency", "bulk=2"])

    assert code == EXIT_OK
    [options] = built
    assert options["queues"] == ["default", "bulk"]
    assert options["queue_concurrency"] == {"bulk": 2}

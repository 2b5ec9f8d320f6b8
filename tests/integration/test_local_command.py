"""``cloudjobs local`` as a real process: it prints working variables, stops cleanly, refuses a taken port."""

from __future__ import annotations

import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

import boto3
import pytest

from cloudjobs.cli.exit_codes import EXIT_OK, EXIT_USAGE
from cloudjobs.cli.local import DEFAULT_LOCAL_PORT, READY_LINE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient

_REPOSITORY_ROOT: Final = Path(__file__).resolve().parents[2]
_DEADLINE_SECONDS: Final = 60.0
"""Far above what starting moto and provisioning take, even on a busy machine."""


def _fresh_environment() -> dict[str, str]:
    """A new user's shell: nothing AWS or cloudjobs configured."""
    return {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "CLOUDJOBS_"))}


def _lines(stream: IO[str]) -> queue.Queue[str | None]:
    """The stream's lines as they arrive (None at its end), read on a thread so waits have deadlines."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def read_exports(process: subprocess.Popen[str]) -> dict[str, str]:
    """The ``export`` lines ``cloudjobs local`` prints, read until its ready line."""
    assert process.stdout is not None
    lines = _lines(process.stdout)
    exported: dict[str, str] = {}
    while True:
        try:
            line = lines.get(timeout=_DEADLINE_SECONDS)
        except queue.Empty:
            pytest.fail("cloudjobs local printed no ready line in time")
        assert line is not None, "cloudjobs local ended before it was ready"
        if line == READY_LINE:
            return exported
        command, assignment = shlex.split(line)
        assert command == "export", line
        name, value = assignment.split("=", 1)
        exported[name] = value


def _is_listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def port() -> int:
    """A port free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        free: int = probe.getsockname()[1]
        return free


@pytest.fixture
def local_process(port: int) -> Iterator[subprocess.Popen[str]]:
    """``cloudjobs local --port PORT`` started as a user would, killed if a test leaves it running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cloudjobs.cli", "local", "--port", str(port)],
        env=_fresh_environment(),
        cwd=_REPOSITORY_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_local_prints_variables_that_reach_its_queue_and_table_and_stops_cleanly(
    local_process: subprocess.Popen[str], port: int, stop_signal: signal.Signals
) -> None:
    exported = read_exports(local_process)

    assert exported["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{port}"
    session = boto3.session.Session(
        aws_access_key_id=exported["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=exported["AWS_SECRET_ACCESS_KEY"],
        region_name=exported["AWS_REGION"],
    )
    sqs: SQSClient = session.client("sqs", endpoint_url=exported["AWS_ENDPOINT_URL"])
    dynamodb: DynamoDBClient = session.client("dynamodb", endpoint_url=exported["AWS_ENDPOINT_URL"])
    try:
        assert sqs.get_queue_url(QueueName="jobs")["QueueUrl"] == exported["CLOUDJOBS_QUEUE_URL"]
        assert sqs.get_queue_url(QueueName="jobs-dlq")["QueueUrl"] == exported["CLOUDJOBS_DLQ_URL"]
        table = dynamodb.describe_table(TableName=exported["CLOUDJOBS_IDEMPOTENCY_TABLE"])["Table"]
        assert table["TableStatus"] == "ACTIVE"
    finally:
        sqs.close()
        dynamodb.close()

    local_process.send_signal(stop_signal)

    assert local_process.wait(timeout=_DEADLINE_SECONDS) == EXIT_OK
    assert local_process.stderr is not None
    assert "Traceback" not in local_process.stderr.read()
    # The server went with it: nothing answers on the port any more.
    assert not _is_listening(port)


def test_local_refuses_a_port_that_is_taken(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        completed = subprocess.run(
            [sys.executable, "-m", "cloudjobs.cli", "local", "--port", str(port)],
            env=_fresh_environment(),
            cwd=_REPOSITORY_ROOT,
            capture_output=True,
            text=True,
            timeout=_DEADLINE_SECONDS,
            check=False,
        )

    assert completed.returncode == EXIT_USAGE
    assert completed.stdout == ""
    assert completed.stderr.splitlines() == [
        f"cloudjobs: configuration error: port: 127.0.0.1:{port} is already in use: stop what listens "
        "there or choose another port"
    ]


def test_the_readme_shows_local_first_as_it_runs() -> None:
    readme = (_REPOSITORY_ROOT / "README.md").read_text(encoding="utf-8")
    headings = [line for line in readme.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Your app on a local AWS", "the first section after the demo"
    section = readme.split("## Your app on a local AWS", 1)[1].split("\n## ", 1)[0]
    assert "$ cloudjobs local\n" in section
    assert f"export AWS_ENDPOINT_URL=http://127.0.0.1:{DEFAULT_LOCAL_PORT}\n" in section
    assert READY_LINE in section
    assert "cloudjobs worker your.module:jobs" in section

"""Each example runs as its README says, in a fresh shell, on ``cloudjobs local``.

A README shows two ``bash`` blocks: the ``cloudjobs local`` command for the first shell, and the
commands for a second shell into which the printed ``export`` lines were pasted. The test runs both
as written, with two substitutions so parallel runs on one machine never collide: ``--port`` on
``cloudjobs local``, and a free port for the web example's 8000. It then waits for the end state the
README describes (read from the local AWS) and stops everything with SIGTERM, as Ctrl-C would.

(examples/lambda_consumer deploys with Terraform, which cannot reach its providers here;
tests/unit/test_aws_lambda.py runs its handler.)
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import boto3
import pytest

from cloudjobs.cli.exit_codes import EXIT_OK
from cloudjobs.local import LOCAL_REGION, LocalAwsServer
from tests.behaviour.conftest import wait_for
from tests.integration.test_local_command import read_exports

_REPOSITORY_ROOT: Final = Path(__file__).resolve().parents[2]
_DEADLINE_SECONDS: Final = 60.0
_BASH_BLOCK: Final = re.compile(r"```bash\n(.*?)```", re.DOTALL)
_WEB_PORT: Final = "8000"

Clients = Callable[[str], Any]
"""A boto3 client for a service (``"sqs"``, ``"dynamodb"``), configured as the README's shell is."""


def _dlq_holds_the_invalid_address(clients: Clients) -> bool:
    client = clients("sqs")
    dlq_url = client.get_queue_url(QueueName="quickstart-dlq")["QueueUrl"]
    attributes = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
    count: int = int(attributes["Attributes"]["ApproximateNumberOfMessages"])
    return count >= 1


def _the_order_is_charged(clients: Clients) -> bool:
    return any(_items(clients, "payments-charges"))


def _the_report_succeeded(clients: Clients) -> bool:
    return any(item.get("status", {}).get("S") == "completed" for item in _items(clients, "reports-status"))


def _items(clients: Clients, table: str) -> list[dict[str, Any]]:
    """The table's items; none while the README's commands have not created it yet."""
    client = clients("dynamodb")
    try:
        items: list[dict[str, Any]] = client.scan(TableName=table, ConsistentRead=True)["Items"]
    except client.exceptions.ResourceNotFoundException:
        return []
    return items


@dataclass(frozen=True, slots=True)
class Example:
    """An example directory and the end state its README describes."""

    name: str
    is_done: Callable[[Clients], bool]


EXAMPLES: Final = [
    Example("quickstart", _dlq_holds_the_invalid_address),
    Example("payments", _the_order_is_charged),
    Example("web_producer", _the_report_succeeded),
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _fresh_shell() -> dict[str, str]:
    """A shell of a user with the virtual environment on PATH and nothing AWS or cloudjobs set."""
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "CLOUDJOBS_"))
    }
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    return environment


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the shell and everything it started; wait until every one of them has exited."""
    with_members = True
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        with_members = False
    process.wait(timeout=_DEADLINE_SECONDS)
    deadline = time.monotonic() + _DEADLINE_SECONDS
    while with_members:
        try:
            os.killpg(process.pid, 0)  # signal 0: does any member still exist?
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, "a process the README started did not stop on SIGTERM"
        time.sleep(0.05)


@pytest.fixture
def local_stack(request: pytest.FixtureRequest) -> Iterator[Callable[[list[str]], dict[str, str]]]:
    """Start a README's ``cloudjobs local`` command (on a free port); its exports; stopped after."""
    processes: list[subprocess.Popen[str]] = []

    def start(command: list[str]) -> dict[str, str]:
        process = subprocess.Popen(
            [*command, "--port", str(_free_port())],
            env=_fresh_shell(),
            cwd=_REPOSITORY_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        processes.append(process)
        return read_exports(process)

    yield start
    for process in processes:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=_DEADLINE_SECONDS) == EXIT_OK
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda example: example.name)
def test_example_runs_as_its_readme_says(
    example: Example, local_stack: Callable[[list[str]], dict[str, str]], tmp_path: Path
) -> None:
    readme = (_REPOSITORY_ROOT / "examples" / example.name / "README.md").read_text(encoding="utf-8")
    first_shell, second_shell = _BASH_BLOCK.findall(readme)
    server_command = shlex.split(first_shell, comments=True)
    assert server_command[:2] == ["cloudjobs", "local"], first_shell

    exported = local_stack(server_command)
    web_port = str(_free_port())
    script = re.sub(rf"(?<=[ :]){_WEB_PORT}\b", web_port, second_shell)
    log_path = tmp_path / "second-shell.log"
    with log_path.open("wb") as log:
        shell = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            env={**_fresh_shell(), **exported},
            cwd=_REPOSITORY_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as one, as a closed terminal is
        )
        try:
            session = boto3.session.Session(
                aws_access_key_id=exported["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=exported["AWS_SECRET_ACCESS_KEY"],
                region_name=exported["AWS_REGION"],
            )

            def clients(service_name: str) -> Any:
                return session.client(service_name, endpoint_url=exported["AWS_ENDPOINT_URL"])  # type: ignore[call-overload]

            def is_done() -> bool:
                code = shell.poll()
                assert code in (None, 0), f"the README's commands failed ({code}):\n{_tail(log_path)}"
                return example.is_done(clients)

            wait_for(is_done, timeout=_DEADLINE_SECONDS, message=f"the {example.name} example to finish")
        finally:
            _stop_group(shell)


def _tail(path: Path) -> str:
    return path.read_bytes()[-4000:].decode("utf-8", errors="replace")


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "examples.payments.provision"],
        ["-m", "examples.web_producer.provision"],
        ["-c", "from examples.payments.app import charges_client; charges_client()"],
    ],
    ids=["payments-provision", "web-producer-provision", "payments-charges-client"],
)
def test_example_scripts_find_the_region_in_aws_region_alone(
    aws_server: LocalAwsServer, command: list[str]
) -> None:
    # Lambda, ECS and the examples' own READMEs set AWS_REGION; botocore by itself reads only
    # AWS_DEFAULT_REGION.
    environment = {
        **_fresh_shell(),
        "AWS_ENDPOINT_URL": aws_server.endpoint_url,
        "AWS_REGION": LOCAL_REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    completed = subprocess.run(
        [sys.executable, *command],
        env=environment,
        cwd=_REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=_DEADLINE_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr

"""Every ``cloudjobs`` command run as a real process against the session's moto server.

Each test starts ``python -m cloudjobs.cli`` (the installed ``cloudjobs`` script for the worker)
with the moto environment and a fresh queue, and checks its output and exit code; the queue is
prepared and inspected with plain boto3. Expected errors must print one line and no traceback.
Parsing, rendering and error mapping are covered in-process by tests/unit/test_cli.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

import boto3
import pytest
from pydantic import BaseModel

from cloudjobs import CloudJobs, PermanentError, Settings
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.dlq.models import decode_or_none
from cloudjobs.envelope import decode
from cloudjobs.provisioning import (
    TABLE_JOB_ID_INDEX,
    ProvisionedQueue,
    QueueSpec,
    TableSpec,
    delete_queue,
    delete_table,
    provision_table,
)
from cloudjobs.runtimes.applier import OutcomeApplier

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient

MakeQueue = Callable[..., ProvisionedQueue]
MakeBackend = Callable[..., SqsBackend]

_REPOSITORY_ROOT: Final = Path(__file__).resolve().parents[2]
_TIMEOUT_SECONDS: Final = 60.0
"""A guard against a hanging command, far above what any command here needs."""


def run_cli(
    *arguments: str, environment: Mapping[str, str], command: tuple[str, ...] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command line with ``arguments`` in a fresh process; never raises on a non-zero exit."""
    return subprocess.run(
        [*(command or (sys.executable, "-m", "cloudjobs.cli")), *arguments],
        env=dict(environment),
        cwd=_REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_SECONDS,
        check=False,
    )


def assert_one_line_error(completed: subprocess.CompletedProcess[str], code: int) -> str:
    """The single stderr line of a command that failed with ``code`` and printed nothing else."""
    assert completed.returncode == code, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.splitlines()
    assert len(lines) == 1, completed.stderr
    assert completed.stdout == ""
    return lines[0]


@pytest.fixture
def environment(aws_environment: dict[str, str]) -> dict[str, str]:
    """This process's environment (pointed at moto by ``aws_environment``), without CLOUDJOBS_* settings."""
    return {name: value for name, value in os.environ.items() if not name.startswith("CLOUDJOBS_")}


@pytest.fixture
def queue(make_queue: MakeQueue) -> ProvisionedQueue:
    """A fresh queue and DLQ."""
    return make_queue()


@pytest.fixture
def queue_environment(environment: dict[str, str], queue: ProvisionedQueue) -> dict[str, str]:
    """The environment with ``queue`` configured as the CLI's queue."""
    return {**environment, "CLOUDJOBS_QUEUE_URL": queue.queue_url}


def _bodies(client: SQSClient, queue_url: str) -> list[str]:
    bodies: list[str] = []
    while True:
        messages = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        bodies.extend(message["Body"] for message in messages)


# -- worker, demo, provision ------------------------------------------------------------------------


def test_the_installed_worker_command_reports_an_app_it_cannot_import(environment: dict[str, str]) -> None:
    completed = run_cli(
        "worker",
        "tests.no_such_module:jobs",
        environment=environment,
        command=(str(Path(sys.executable).parent / "cloudjobs"),),
    )

    line = assert_one_line_error(completed, 2)
    assert line.startswith("cloudjobs: configuration error: cannot import 'tests.no_such_module'")


def test_demo_runs_its_jobs_on_an_embedded_server() -> None:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}

    completed = run_cli("demo", environment=environment)

    assert completed.returncode == 0, completed.stderr
    assert "as expected" in completed.stdout


@pytest.fixture
def provisioned_name(sqs_client: SQSClient) -> Iterator[str]:
    name = f"test-cli-{uuid.uuid4().hex[:12]}"
    yield name
    delete_queue(QueueSpec(name), client=sqs_client)


def test_provision_creates_the_queue_and_its_dlq_and_prints_their_urls(
    environment: dict[str, str], provisioned_name: str, sqs_client: SQSClient
) -> None:
    completed = run_cli("provision", provisioned_name, "--max-receive-count", "3", environment=environment)

    assert completed.returncode == 0, completed.stderr
    printed = dict(line.split("=", 1) for line in completed.stdout.splitlines())
    assert printed == {
        "CLOUDJOBS_QUEUE_URL": sqs_client.get_queue_url(QueueName=provisioned_name)["QueueUrl"],
        "CLOUDJOBS_DLQ_URL": sqs_client.get_queue_url(QueueName=f"{provisioned_name}-dlq")["QueueUrl"],
    }
    attributes = sqs_client.get_queue_attributes(
        QueueUrl=printed["CLOUDJOBS_QUEUE_URL"], AttributeNames=["RedrivePolicy"]
    )["Attributes"]
    assert int(json.loads(attributes["RedrivePolicy"])["maxReceiveCount"]) == 3


def test_provision_with_a_table_creates_the_idempotency_table_and_prints_its_name(
    environment: dict[str, str], provisioned_name: str
) -> None:
    table = f"{provisioned_name}-idempotency"
    client: DynamoDBClient = boto3.session.Session().client("dynamodb")
    try:
        completed = run_cli("provision", provisioned_name, "--table", table, environment=environment)

        assert completed.returncode == 0, completed.stderr
        printed = dict(line.split("=", 1) for line in completed.stdout.splitlines())
        assert printed["CLOUDJOBS_IDEMPOTENCY_TABLE"] == table
        assert set(printed) == {"CLOUDJOBS_QUEUE_URL", "CLOUDJOBS_DLQ_URL", "CLOUDJOBS_IDEMPOTENCY_TABLE"}
        description = client.describe_table(TableName=table)["Table"]
        assert [index["IndexName"] for index in description.get("GlobalSecondaryIndexes", [])] == [
            TABLE_JOB_ID_INDEX
        ]
    finally:
        delete_table(TableSpec(table), client=client)
        client.close()


# -- enqueue ----------------------------------------------------------------------------------------


def test_enqueue_sends_the_payload_and_prints_the_job_id_as_json(
    queue_environment: dict[str, str], queue: ProvisionedQueue, sqs_client: SQSClient
) -> None:
    completed = run_cli(
        "enqueue", "send-email", '{"to": "ada@example.com"}', "--json", environment=queue_environment
    )

    assert completed.returncode == 0, completed.stderr
    printed = json.loads(completed.stdout)
    [envelope] = [decode(body) for body in _bodies(sqs_client, queue.queue_url)]
    assert printed == {"job_id": envelope.id, "type": "send-email", "delay_seconds": 0}
    assert envelope.payload == {"to": "ada@example.com"}
    assert completed.stderr == ""  # without --app there is no registry to doubt the type against


_WORKER_APP: Final = "tests.integration.worker_app:jobs"
"""An app that registers ``work`` and ``gated`` and builds its queue from ``CLOUDJOBS_*``."""


def test_enqueue_with_an_app_refuses_a_type_it_does_not_register_and_sends_nothing(
    queue_environment: dict[str, str], queue: ProvisionedQueue, sqs_client: SQSClient
) -> None:
    completed = run_cli("enqueue", "wrok", "{}", "--app", _WORKER_APP, environment=queue_environment)

    line = assert_one_line_error(completed, 2)
    assert "no handler registered for job type 'wrok' (did you mean 'work'? registered: gated, work)" in line
    assert "--allow-unregistered" in line
    assert _bodies(sqs_client, queue.queue_url) == []


def test_enqueue_with_an_app_sends_an_unregistered_type_when_allowed_and_warns(
    queue_environment: dict[str, str], queue: ProvisionedQueue, sqs_client: SQSClient
) -> None:
    completed = run_cli(
        "enqueue",
        "billing.charge",
        '{"cents": 5}',
        "--app",
        _WORKER_APP,
        "--allow-unregistered",
        "--json",
        environment=queue_environment,
    )

    assert completed.returncode == 0, completed.stderr
    [envelope] = [decode(body) for body in _bodies(sqs_client, queue.queue_url)]
    assert json.loads(completed.stdout)["job_id"] == envelope.id
    assert (envelope.type, envelope.payload) == ("billing.charge", {"cents": 5})
    assert "no handler registered for job type 'billing.charge'" in completed.stderr


# -- dlq, stats, cancel ----------------------------------------------------------------------------


class Greeting(BaseModel):
    """The payload of ``greet``."""

    name: str


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """The DLQ after :func:`dead_letters`: a permanent failure, a schema failure and a foreign body."""

    exploded: str
    invalid: str


@pytest.fixture
def dead_letters(queue: ProvisionedQueue, make_backend: MakeBackend, sqs_client: SQSClient) -> DeadLetters:
    """Run the consumer core over two jobs that it dead-letters, and put a foreign body in the DLQ."""
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=make_backend(queue_url=queue.queue_url))

    @jobs.job("explode")
    def explode(payload: dict[str, object]) -> None:
        raise PermanentError("boom")

    @jobs.job("greet")
    def greet(payload: Greeting) -> None:
        raise AssertionError("an invalid payload never reaches the handler")

    # A producer without the registry: it sends the invalid payload unchecked, as another service might.
    producer = CloudJobs(settings=Settings(_env_file=None), backend=jobs.backend)
    exploded = producer.enqueue("explode", {"n": 1})
    invalid = producer.enqueue("greet", {"nom": "Ada"})
    consumer, applier = jobs.consumer(), OutcomeApplier(jobs.backend, jobs.clock)
    handled = 0
    while deliveries := jobs.backend.receive(max_messages=10, wait=timedelta(0)):
        for delivery in deliveries:
            applier.apply(delivery, consumer.process(delivery))
            handled += 1
    applier.flush()
    assert handled == 2
    sqs_client.send_message(QueueUrl=queue.dlq_url, MessageBody="not an envelope")
    return DeadLetters(exploded=exploded, invalid=invalid)


def test_dlq_list_shows_each_reason_and_leaves_every_message_in_place(
    queue_environment: dict[str, str], dead_letters: DeadLetters
) -> None:
    listed = run_cli("dlq", "list", "--json", environment=queue_environment)
    table = run_cli("dlq", "list", environment=queue_environment)

    assert listed.returncode == 0, listed.stderr
    reasons = {job["job_id"]: job["reason"] for job in json.loads(listed.stdout)}
    assert reasons == {
        dead_letters.exploded: "permanent_error",
        dead_letters.invalid: "invalid_payload",
        None: None,
    }
    # The second listing (a table) sees all three again: listing released what it read.
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()
    assert rows[0].split() == ["JOB", "ID", "TYPE", "REASON", "ATTEMPTS", "LAST", "FAILED", "ERROR"]
    assert len(rows) == 4
    assert any(dead_letters.exploded in row and "PermanentError: boom" in row for row in rows)


def test_dlq_redrive_by_type_moves_only_the_matching_jobs(
    queue_environment: dict[str, str],
    dead_letters: DeadLetters,
    queue: ProvisionedQueue,
    sqs_client: SQSClient,
) -> None:
    completed = run_cli("dlq", "redrive", "--type", "explode", "--json", environment=queue_environment)

    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {
        "moved": 1,
        "skipped": 2,
        "failed": 0,
        "dry_run": False,
        "job_ids": [dead_letters.exploded],
        "errors": [],
        "returned": 0,
        "stop": "drained",
    }
    [moved] = [decode(body) for body in _bodies(sqs_client, queue.queue_url)]
    assert (moved.id, moved.redrive_count) == (dead_letters.exploded, 1)
    assert len(_bodies(sqs_client, queue.dlq_url)) == 2


def test_dlq_purge_without_yes_refuses_and_with_a_type_deletes_only_those(
    queue_environment: dict[str, str],
    dead_letters: DeadLetters,
    queue: ProvisionedQueue,
    sqs_client: SQSClient,
) -> None:
    refused = run_cli("dlq", "purge", "--type", "greet", environment=queue_environment)
    purged = run_cli("dlq", "purge", "--type", "greet", "--yes", "--json", environment=queue_environment)

    assert "refusing to delete messages without --yes" in assert_one_line_error(refused, 2)
    assert purged.returncode == 0, purged.stderr
    assert json.loads(purged.stdout) == {"purged": 1}
    remaining = [decode_or_none(body) for body in _bodies(sqs_client, queue.dlq_url)]
    assert sorted(envelope.id if envelope else "foreign" for envelope in remaining) == sorted(
        [dead_letters.exploded, "foreign"]
    )


def test_stats_report_the_depths_and_exit_one_while_the_dlq_holds_messages(
    queue_environment: dict[str, str],
    dead_letters: DeadLetters,
    queue: ProvisionedQueue,
    sqs_client: SQSClient,
) -> None:
    sqs_client.send_message(QueueUrl=queue.queue_url, MessageBody="{}")
    sqs_client.send_message(QueueUrl=queue.queue_url, MessageBody="{}", DelaySeconds=600)

    completed = run_cli("stats", "--json", environment=queue_environment)

    assert completed.returncode == 1, completed.stderr
    document = json.loads(completed.stdout)
    assert (document["visible"], document["in_flight"], document["delayed"]) == (1, 0, 1)
    assert (document["dlq_depth"], document["healthy"]) == (3, False)
    assert [finding["name"] for finding in document["findings"]] == ["dlq_depth"]


def test_stats_watch_refreshes_until_ctrl_c_and_exits_with_the_last_check(
    queue_environment: dict[str, str], queue: ProvisionedQueue, sqs_client: SQSClient
) -> None:
    command = [sys.executable, "-m", "cloudjobs.cli", "stats", "--watch", "--interval", "0.1", "--json"]
    with subprocess.Popen(
        command,
        env=queue_environment,
        cwd=_REPOSITORY_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            first = json.loads(process.stdout.readline())
            sqs_client.send_message(QueueUrl=queue.dlq_url, MessageBody="poison")
            while json.loads(process.stdout.readline())["dlq_depth"] == 0:
                pass
            # One more check: a Ctrl-C landing while a check prints leaves the one before as the last.
            latest = json.loads(process.stdout.readline())
            process.send_signal(signal.SIGINT)
            _, errors = process.communicate(timeout=_TIMEOUT_SECONDS)
        finally:
            process.kill()

    assert (first["dlq_depth"], first["healthy"]) == (0, True)
    assert (latest["dlq_depth"], latest["healthy"]) == (1, False)
    assert process.returncode == 1
    assert errors == ""


@pytest.fixture
def table_name(aws_environment: dict[str, str]) -> Iterator[str]:
    """A fresh idempotency and status table on the moto server."""
    client = boto3.session.Session().client("dynamodb")
    spec = TableSpec(f"test-cli-{uuid.uuid4().hex[:12]}")
    provision_table(spec, client=client)
    yield spec.name
    delete_table(spec, client=client)
    client.close()


def test_cancel_marks_a_job_that_keeps_no_record(queue_environment: dict[str, str], table_name: str) -> None:
    environment = {**queue_environment, "CLOUDJOBS_IDEMPOTENCY_TABLE": table_name}

    completed = run_cli("cancel", "job-123", "--json", environment=environment)

    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"job_id": "job-123", "outcome": "marked", "status": None}


# -- expected errors --------------------------------------------------------------------------------


def test_a_missing_queue_is_one_line(environment: dict[str, str]) -> None:
    environment = {**environment, "CLOUDJOBS_QUEUE_NAME": f"missing-{uuid.uuid4().hex[:12]}"}

    completed = run_cli("enqueue", "t", "{}", environment=environment)

    line = assert_one_line_error(completed, 1)
    assert "does not exist" in line
    assert "CLOUDJOBS_QUEUE_URL" in line


def test_missing_credentials_are_one_line(queue_environment: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    environment = {
        name: value
        for name, value in queue_environment.items()
        if name not in {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"}
        and not name.startswith(("AWS_CONTAINER_", "AWS_WEB_IDENTITY"))
    }
    environment |= {
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_CONFIG_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
    }

    completed = run_cli("enqueue", "t", "{}", environment=environment)

    line = assert_one_line_error(completed, 2)
    assert line.startswith("cloudjobs: no AWS credentials found")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_an_unreachable_endpoint_is_one_line(queue_environment: dict[str, str]) -> None:
    environment = {**queue_environment, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}"}

    completed = run_cli("enqueue", "t", "{}", environment=environment)

    line = assert_one_line_error(completed, 1)
    assert line.startswith("cloudjobs: SQS endpoint unreachable")


def test_a_payload_that_is_not_json_is_one_line_and_sends_nothing(
    queue_environment: dict[str, str], queue: ProvisionedQueue, sqs_client: SQSClient
) -> None:
    completed = run_cli("enqueue", "t", "{'single': 'quotes'}", environment=queue_environment)

    line = assert_one_line_error(completed, 2)
    assert "not valid JSON" in line
    assert _bodies(sqs_client, queue.queue_url) == []

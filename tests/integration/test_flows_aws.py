"""Flows over HTTP: SQS on moto's server, the table on DynamoDB Local (children of one flow count
themselves with concurrent conditional writes to one item, which moto's DynamoDB does not serialise)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest

from cloudjobs import CloudJobs, Job, JobState, PermanentError, Settings
from cloudjobs.envelope import decode
from cloudjobs.flows import subflow
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.provisioning import ProvisionedQueue, TableSpec, delete_table, provision_table
from cloudjobs.settings import ENV_PREFIX
from tests.behaviour.conftest import running, wait_for
from tests.dynamodb_local import DynamoDbLocal
from tests.integration.worker_app import LEDGER_VARIABLE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient


class Events:
    """What the handlers did, in order, across the worker's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.lines: list[str] = []
        self.parent_results: list[dict[str, object]] = []

    def add(self, line: str, results: dict[str, object] | None = None) -> None:
        with self._lock:
            self.lines.append(line)
            if results is not None:
                self.parent_results.append(results)

    def count(self, line: str) -> int:
        with self._lock:
            return self.lines.count(line)


@pytest.fixture
def local_store(
    dynamodb_local: DynamoDbLocal, aws_environment: dict[str, str]
) -> Iterator[DynamoDbIdempotencyStore]:
    client: DynamoDBClient = boto3.session.Session().client(
        "dynamodb", endpoint_url=dynamodb_local.endpoint_url
    )
    spec = TableSpec(f"test-{uuid.uuid4().hex[:16]}")
    provision_table(spec, client=client)
    yield DynamoDbIdempotencyStore(spec.name, client=client, max_pool_connections=32)
    delete_table(spec, client=client)
    client.close()


@pytest.fixture
def queue(make_queue: Callable[..., ProvisionedQueue]) -> ProvisionedQueue:
    return make_queue(visibility_timeout_seconds=5, max_receive_count=3)


def _app(queue: ProvisionedQueue, store: DynamoDbIdempotencyStore, events: Events) -> CloudJobs:
    settings = Settings(
        _env_file=None,
        queue_url=queue.queue_url,
        dlq_url=queue.dlq_url,
        wait_time_seconds=1,
        backoff_base_seconds=0.2,
        backoff_cap_seconds=0.5,
    )
    jobs = CloudJobs(settings=settings, idempotency_store=store)

    @jobs.job("fetch", max_attempts=2)
    def fetch(payload: dict[str, int]) -> dict[str, int]:
        events.add(f"fetch {payload['n']}")
        if payload.get("fail"):
            raise PermanentError("the source is gone")
        return {"n": payload["n"] * 10}

    @jobs.job("report")
    def report(payload: dict[str, str], job: Job) -> int:
        results = job.child_results()
        events.add(f"report {payload['name']}", dict(results))
        return len(results)

    return jobs


def _dead_letter_reasons(sqs_client: SQSClient, dlq_url: str) -> list[tuple[str, str]]:
    """(job id, reason) of every message on the DLQ, received until empty."""
    found: list[tuple[str, str]] = []
    while True:
        messages = sqs_client.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return found
        for message in messages:
            details = json.loads(message["MessageAttributes"]["cloudjobs.dead_letter"]["StringValue"])
            found.append((decode(message["Body"]).id, details["reason"]))


def _is_finished(jobs: CloudJobs, job_id: str) -> bool:
    status = jobs.status(job_id)
    return status is not None and status.is_finished


def test_fifty_children_run_the_parent_once_after_the_last_with_fifty_results(
    queue: ProvisionedQueue, local_store: DynamoDbIdempotencyStore
) -> None:
    events = Events()
    jobs = _app(queue, local_store, events)
    flow = jobs.flow(("report", {"name": "r"}), children=[("fetch", {"n": n}) for n in range(50)])

    with running(jobs, concurrency=8):
        wait_for(lambda: _is_finished(jobs, flow.parent_id), timeout=90, message="the parent to finish")

    assert events.count("report r") == 1
    assert events.lines[-1] == "report r"
    assert events.parent_results == [{child: {"n": n * 10} for n, child in enumerate(flow.child_ids)}]
    status = jobs.status(flow.parent_id)
    assert status is not None
    assert status.state is JobState.SUCCEEDED
    assert status.result == 50


def test_failed_child_sends_the_parent_to_the_dlq_with_child_failed(
    queue: ProvisionedQueue, local_store: DynamoDbIdempotencyStore, sqs_client: SQSClient
) -> None:
    events = Events()
    jobs = _app(queue, local_store, events)
    children = [("fetch", {"n": n, "fail": int(n == 7)}) for n in range(50)]
    flow = jobs.flow(("report", {"name": "r"}), children=children, on_child_failure="fail")

    with running(jobs, concurrency=8):
        wait_for(lambda: _is_finished(jobs, flow.parent_id), timeout=90, message="the parent to fail")
        wait_for(lambda: all(_is_finished(jobs, child) for child in flow.child_ids), timeout=90)

    assert events.count("report r") == 0
    reasons = _dead_letter_reasons(sqs_client, queue.dlq_url)
    assert (flow.parent_id, "child_failed") in reasons
    assert [job_id for job_id, _ in reasons].count(flow.parent_id) == 1


def test_failed_child_with_ignore_runs_the_parent_with_forty_nine_results(
    queue: ProvisionedQueue, local_store: DynamoDbIdempotencyStore
) -> None:
    events = Events()
    jobs = _app(queue, local_store, events)
    children = [("fetch", {"n": n, "fail": int(n == 7)}) for n in range(50)]
    flow = jobs.flow(("report", {"name": "r"}), children=children, on_child_failure="ignore")

    with running(jobs, concurrency=8):
        wait_for(lambda: _is_finished(jobs, flow.parent_id), timeout=90, message="the parent to finish")

    assert events.count("report r") == 1
    [results] = events.parent_results
    assert len(results) == 49
    assert flow.child_ids[7] not in results


def test_child_lost_to_the_redrive_ends_the_wait_at_the_timeout(
    queue: ProvisionedQueue, local_store: DynamoDbIdempotencyStore, sqs_client: SQSClient
) -> None:
    events = Events()
    jobs = _app(queue, local_store, events)
    flow = jobs.flow(
        ("report", {"name": "r"}),
        children=[("fetch", {"n": 1}), ("fetch", {"n": 2})],
        on_child_failure="ignore",
        timeout=timedelta(seconds=4),
    )
    # Take the second child's message away, as SQS's own redrive would: nothing records it.
    lost = flow.child_ids[1]
    taken: list[str] = []
    while not taken:
        for message in sqs_client.receive_message(
            QueueUrl=queue.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
        ).get("Messages", []):
            if decode(message["Body"]).id == lost:
                sqs_client.delete_message(QueueUrl=queue.queue_url, ReceiptHandle=message["ReceiptHandle"])
                taken.append(lost)

    with running(jobs, concurrency=4):
        wait_for(lambda: _is_finished(jobs, flow.parent_id), timeout=60, message="the parent to finish")

    assert events.count("report r") == 1
    assert events.parent_results == [{flow.child_ids[0]: {"n": 10}}]


def test_nested_flow_completes_in_order(
    queue: ProvisionedQueue, local_store: DynamoDbIdempotencyStore
) -> None:
    events = Events()
    jobs = _app(queue, local_store, events)
    inner = subflow(("report", {"name": "inner"}), [("fetch", {"n": n}) for n in range(5)])
    flow = jobs.flow(("report", {"name": "outer"}), children=[("fetch", {"n": 100}), inner])

    with running(jobs, concurrency=4):
        wait_for(lambda: _is_finished(jobs, flow.parent_id), timeout=60, message="the outer parent")

    lines = events.lines
    assert lines.index("report inner") > max(lines.index(f"fetch {n}") for n in range(5))
    assert lines[-1] == "report outer"
    assert events.count("report inner") == 1
    assert events.count("report outer") == 1
    [inner_id] = flow.subflows
    assert events.parent_results[-1] == {flow.child_ids[0]: {"n": 1000}, inner_id: 5}


# -- a worker killed during the flow -----------------------------------------------------------------

_REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
_FLOW_WORKER = (
    str(Path(sys.executable).parent / "cloudjobs"),
    "worker",
    "tests.integration.flow_worker_app:jobs",
)


def _spawn(environment: dict[str, str], stderr_path: Path) -> subprocess.Popen[bytes]:
    with stderr_path.open("wb") as stderr:
        return subprocess.Popen(
            _FLOW_WORKER,
            cwd=_REPOSITORY_ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def _ledger(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def test_worker_killed_during_the_flow_changes_nothing(
    make_queue: Callable[..., ProvisionedQueue],
    local_store: DynamoDbIdempotencyStore,
    dynamodb_local: DynamoDbLocal,
    aws_environment: dict[str, str],
    sqs_client: SQSClient,
    tmp_path: Path,
) -> None:
    queue = make_queue(visibility_timeout_seconds=3, max_receive_count=5)
    ledger = tmp_path / "ledger.jsonl"
    environment = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    environment.update(aws_environment)
    environment.update(
        {
            LEDGER_VARIABLE: str(ledger),
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_local.endpoint_url,
            "CLOUDJOBS_QUEUE_URL": queue.queue_url,
            "CLOUDJOBS_DLQ_URL": queue.dlq_url,
            "CLOUDJOBS_IDEMPOTENCY_TABLE": local_store.table,
            "CLOUDJOBS_WAIT_TIME_SECONDS": "1",
            "CLOUDJOBS_CONCURRENCY": "4",
        }
    )
    producer = CloudJobs(
        settings=Settings(_env_file=None, queue_url=queue.queue_url, dlq_url=queue.dlq_url),
        idempotency_store=local_store,
    )
    children = [("slow-fetch", {"n": n, "seconds": 0.2}) for n in range(30)]
    flow = producer.flow(("collect", {"name": "r"}), children=children)

    first = _spawn(environment, tmp_path / "first.stderr")
    try:
        wait_for(
            lambda: sum(1 for event in _ledger(ledger) if event["event"] == "end") >= 8,
            timeout=60,
            message="some children to finish in the first worker",
        )
    finally:
        first.kill()
        assert first.wait(10) == -signal.SIGKILL
    second = _spawn(environment, tmp_path / "second.stderr")
    try:
        wait_for(
            lambda: any(event["event"] == "completed" for event in _ledger(ledger)),
            timeout=90,
            message="the parent to run in the second worker",
        )
        wait_for(lambda: _is_finished(producer, flow.parent_id), timeout=30)
    finally:
        second.terminate()
        second.wait(20)

    completed = [event for event in _ledger(ledger) if event["event"] == "completed"]
    assert [event["job"] for event in completed] == ["report-30"]
    assert completed[0]["pid"] == second.pid
    status = producer.status(flow.parent_id)
    assert status is not None
    assert status.state is JobState.SUCCEEDED
    assert status.result == 30
    assert _dead_letter_reasons(sqs_client, queue.dlq_url) == []


def test_status_of_a_waiting_parent_counts_its_children_on_dynamodb(
    queue: ProvisionedQueue, local_store: DynamoDbIdempotencyStore
) -> None:
    events = Events()
    jobs = _app(queue, local_store, events)
    flow = jobs.flow(("report", {"name": "r"}), children=[("fetch", {"n": n}) for n in range(3)])

    status = jobs.status(flow.parent_id)

    assert status is not None
    assert status.state is JobState.WAITING_CHILDREN
    assert status.children is not None
    assert (status.children.total, status.children.remaining) == (3, 3)
    assert set(status.children.child_ids) == set(flow.child_ids)

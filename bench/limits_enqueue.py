"""Unique jobs' and results' cost: DynamoDB requests per unique enqueue and per second of ``jobs.result``.

SQS runs on moto's server, the table on Amazon's DynamoDB Local (``--dynamodb moto`` for moto's;
install DynamoDB Local with ``scripts/install-dynamodb-local``). Every DynamoDB call the producer makes
is counted by operation with a botocore ``before-call`` hook; each measurement runs on a fresh queue
and table, and prints one row:

- a first unique enqueue (a new key): the reservation and its confirmation;
- a repeat within the window: the refused reservation, which returns the holder (no read);
- a repeat with ``unique_until="finished"`` while the first job is pending: the refused reservation
  and a read of the first job's record;
- ``jobs.result`` on a tracked job nobody runs, for ``--wait`` seconds: reads per second of waiting;
- ``jobs.result`` from another process (the job id only) on a finished job: finding and reading it.

Run: ``python bench/limits_enqueue.py`` (``--enqueues 50 --wait 10``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from cloudjobs import CloudJobs, ResultTimeoutError, Settings
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.local import LocalAwsServer, local_environment
from cloudjobs.provisioning import (
    QueueSpec,
    TableSpec,
    delete_queue,
    delete_table,
    provision_queue,
    provision_table,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient


@dataclass(frozen=True, slots=True)
class Row:
    """One measurement: what was done, how often, and the DynamoDB requests it made."""

    what: str
    count: int
    unit: str
    requests: Counter[str]

    def per_unit(self) -> str:
        total = sum(self.requests.values()) / self.count
        parts = ", ".join(f"{name} {calls / self.count:.2f}" for name, calls in sorted(self.requests.items()))
        return f"{total:.2f} ({parts})"


@dataclass(frozen=True, slots=True)
class Stack:
    """A queue and table for one measurement, and a producer app whose DynamoDB calls are counted."""

    jobs: CloudJobs
    requests: Counter[str]
    queue_url: str
    table: str


@contextlib.contextmanager
def stack(sqs: SQSClient, dynamodb: DynamoDBClient) -> Iterator[Stack]:
    """A fresh queue and table, and an app on them that counts its DynamoDB requests."""
    name = f"bench-{uuid.uuid4().hex[:12]}"
    spec = QueueSpec(name)
    queue = provision_queue(spec, client=sqs)
    table = TableSpec(name)
    provision_table(table, client=dynamodb)
    requests: Counter[str] = Counter()
    lock = threading.Lock()

    def count(model: Any, **_: Any) -> None:
        with lock:
            requests[model.name] += 1

    session = boto3.Session()
    session.events.register("before-call.dynamodb", count)
    store = DynamoDbIdempotencyStore(table.name, session=session)
    settings = Settings(
        _env_file=None, queue_url=queue.queue_url, idempotency_table=table.name, wait_time_seconds=1
    )
    jobs = CloudJobs(settings=settings, idempotency_store=store)

    @jobs.job("sync-contacts")
    def sync(payload: dict[str, str]) -> str:
        return payload["account"]

    try:
        yield Stack(jobs, requests, queue.queue_url, table.name)
    finally:
        delete_table(table, client=dynamodb)
        delete_queue(spec, client=sqs)


def counted(target: Stack, action: Callable[[], object]) -> Counter[str]:
    """The DynamoDB requests ``action`` makes (those made before it are left out)."""
    target.requests.clear()
    action()
    return Counter(target.requests)


def first_unique_enqueue(target: Stack, enqueues: int) -> Row:
    """A new key each time: reserve (UpdateItem), send, confirm (UpdateItem)."""

    def enqueue_all() -> None:
        for index in range(enqueues):
            target.jobs.enqueue(
                "sync-contacts", {"account": str(index)}, unique_for=600, unique_key=f"k-{index}"
            )

    return Row("unique enqueue, first (new key)", enqueues, "enqueue", counted(target, enqueue_all))


def repeat_unique_enqueue(target: Stack, enqueues: int) -> Row:
    """One key: the first enqueue is left out, each repeat's refused UpdateItem is counted."""
    target.jobs.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7")

    def repeat_all() -> None:
        for _ in range(enqueues):
            target.jobs.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7")

    return Row("unique enqueue, repeat within the window", enqueues, "enqueue", counted(target, repeat_all))


def repeat_until_finished(target: Stack, enqueues: int) -> Row:
    """``unique_until="finished"``, the first job pending: a refused UpdateItem and a GetItem."""

    def enqueue() -> str:
        return target.jobs.enqueue(
            "sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7", unique_until="finished"
        )

    enqueue()

    def repeat_all() -> None:
        for _ in range(enqueues):
            enqueue()

    return Row(
        'unique enqueue, repeat with unique_until="finished" (first job pending)',
        enqueues,
        "enqueue",
        counted(target, repeat_all),
    )


def result_wait(target: Stack, seconds: int) -> Row:
    """``jobs.result`` on a tracked job nobody runs, until its timeout: reads per second of waiting."""
    job_id = target.jobs.enqueue("sync-contacts", {"account": "7"}, track_status=True)

    def wait() -> None:
        with contextlib.suppress(ResultTimeoutError):
            target.jobs.result(job_id, timeout=seconds)

    return Row(f"jobs.result waiting {seconds} s (job not run)", seconds, "second", counted(target, wait))


def result_elsewhere(target: Stack, calls: int) -> Row:
    """``jobs.result`` of a finished job by another process (index Query, then GetItem)."""
    producer = target.jobs
    job_ids = [
        producer.enqueue("sync-contacts", {"account": str(n)}, track_status=True) for n in range(calls)
    ]
    elsewhere = CloudJobs(settings=producer.settings, idempotency_store=producer.idempotency_store)

    @elsewhere.job("sync-contacts")
    def sync(payload: dict[str, str]) -> str:
        return payload["account"]

    # Run the jobs with a worker of another app, then ask for each result from a third (knows no id).
    consumer = elsewhere.worker(concurrency=2, queue_metrics_interval=None)
    runner = threading.Thread(target=consumer.run)
    runner.start()
    try:
        for job_id in job_ids:
            producer.result(job_id, timeout=30)
    finally:
        consumer.stop()
        runner.join()
    reader = CloudJobs(settings=producer.settings, idempotency_store=producer.idempotency_store)

    def read_all() -> None:
        for job_id in job_ids:
            reader.result(job_id, timeout=30)

    return Row(
        "jobs.result of a finished job, from another process", calls, "call", counted(target, read_all)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--enqueues", type=int, default=50)
    parser.add_argument("--wait", type=int, default=10, help="seconds jobs.result waits")
    parser.add_argument("--dynamodb", choices=("dynamodb-local", "moto"), default="dynamodb-local")
    arguments = parser.parse_args(argv)

    rows: list[Row] = []
    with LocalAwsServer() as server, contextlib.ExitStack() as stacks:
        os.environ.update(local_environment(server.endpoint_url))
        if arguments.dynamodb == "dynamodb-local":
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.dynamodb_local import DynamoDbLocal

            dynamodb_local = stacks.enter_context(DynamoDbLocal())
            os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = dynamodb_local.endpoint_url
        sqs: SQSClient = boto3.client("sqs")
        dynamodb: DynamoDBClient = boto3.client("dynamodb")
        started = time.monotonic()
        measurements: list[tuple[Callable[[Stack, int], Row], int]] = [
            (first_unique_enqueue, arguments.enqueues),
            (repeat_unique_enqueue, arguments.enqueues),
            (repeat_until_finished, arguments.enqueues),
            (result_wait, arguments.wait),
            (result_elsewhere, 10),
        ]
        for measure, amount in measurements:
            with stack(sqs, dynamodb) as target:
                rows.append(measure(target, amount))
        sqs.close()
        dynamodb.close()
    print(f"DynamoDB requests ({arguments.dynamodb}; {time.monotonic() - started:.0f} s in all)\n")
    print("| Measurement | Per | DynamoDB requests per unit (by operation) |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row.what} | {row.unit} | {row.per_unit()} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Flows' cost: DynamoDB requests to create a flow, per child run and per parent run.

SQS runs on moto's server, the table on Amazon's DynamoDB Local (``--dynamodb moto`` for moto's;
install DynamoDB Local with ``scripts/install-dynamodb-local``). Every DynamoDB call is counted by
operation with a botocore ``before-call`` hook. The bench creates one flow of ``--children``
children, then receives the queue's messages itself and runs each through the consumer core
(``Consumer.process``), counting the requests of each run: a child's, the parent's (its early
message), and each received batch's cancellation-marker read (``Consumer.prefetch``), as a worker does.

Run: ``python bench/flows.py`` (``--children 50``).
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
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from cloudjobs import CloudJobs, Completed, Job, Settings
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.envelope import decode
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


def _per(requests: Counter[str], count: int) -> str:
    total = sum(requests.values()) / count
    parts = ", ".join(f"{name} {calls / count:.2f}" for name, calls in sorted(requests.items()))
    return f"{total:.2f} ({parts})"


def measure(sqs: SQSClient, dynamodb: DynamoDBClient, children: int) -> list[tuple[str, int, str]]:
    """Create and run one flow; rows of (what, how many, requests per one)."""
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
    backend = SqsBackend(queue_url=queue.queue_url, dlq_url=queue.dlq_url)
    settings = Settings(_env_file=None, queue_url=queue.queue_url, dlq_url=queue.dlq_url, wait_time_seconds=1)
    jobs = CloudJobs(settings=settings, backend=backend, idempotency_store=store)

    @jobs.job("fetch")
    def fetch(payload: dict[str, int]) -> int:
        return payload["n"]

    @jobs.job("report")
    def report(payload: dict[str, int], job: Job) -> int:
        return len(job.child_results())

    try:
        requests.clear()
        flow = jobs.flow(("report", {}), children=[("fetch", {"n": n}) for n in range(children)])
        created = Counter(requests)
        consumer = jobs.consumer()
        by_role: dict[str, Counter[str]] = {"child": Counter(), "parent": Counter(), "batch": Counter()}
        runs: Counter[str] = Counter()
        parent_done = False
        while not parent_done:
            batch = backend.receive(max_messages=10, wait=timedelta(seconds=1))
            if not batch:
                continue
            requests.clear()
            consumer.begin_batch(batch)
            by_role["batch"].update(requests)
            runs["batch"] += 1
            for delivery in batch:
                role = "parent" if decode(delivery.body).id == flow.parent_id else "child"
                requests.clear()
                outcome = consumer.process(delivery)
                by_role[role].update(requests)
                runs[role] += 1
                if isinstance(outcome, Completed):
                    backend.delete([delivery.receipt])
                parent_done = parent_done or (role == "parent" and isinstance(outcome, Completed))
        return [
            (f"create a flow of {children} children (producer)", 1, _per(created, 1)),
            ("  the same, per child", children, _per(created, children)),
            (
                "child run (lease, complete, count on the flow; the last one sends the parent)",
                runs["child"],
                _per(by_role["child"], runs["child"]),
            ),
            (
                "parent run (gate, lease, child_results, complete)",
                runs["parent"],
                _per(by_role["parent"], runs["parent"]),
            ),
            ("received batch (cancellation markers)", runs["batch"], _per(by_role["batch"], runs["batch"])),
        ]
    finally:
        backend.close()
        delete_table(table, client=dynamodb)
        delete_queue(spec, client=sqs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--children", type=int, default=50)
    parser.add_argument("--dynamodb", choices=("dynamodb-local", "moto"), default="dynamodb-local")
    arguments = parser.parse_args(argv)
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
        rows = measure(sqs, dynamodb, arguments.children)
        sqs.close()
        dynamodb.close()
    print(f"DynamoDB requests ({arguments.dynamodb}; {time.monotonic() - started:.0f} s in all)\n")
    print("| Measurement | Runs | DynamoDB requests per run (by operation) |")
    print("|---|---|---|")
    for what, runs, per in rows:
        print(f"| {what} | {runs} | {per} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Idempotency's cost: DynamoDB requests per job, and worker throughput with idempotency on vs off.

One run, against one moto server (its own process), on a fresh queue and table per round:

- **request economy**: every AWS call the worker makes is counted by operation with a botocore
  ``before-call`` hook. The happy path of an idempotent job must cost at most two DynamoDB requests
  (UpdateItem to take the lease, UpdateItem to complete), a duplicate of a completed job one
  (the failed conditional UpdateItem answers with the stored record), no reads (GetItem, Query,
  Scan) and no transactional writes (they cost twice the write units); besides, one BatchGetItem per
  received batch reads its cancellation markers (at most a tenth of a request per job).
- **throughput**: a ``before-send`` hook adds a simulated 10 ms round trip to every AWS call (SQS and
  DynamoDB alike, as in a region), and the worker runs ``--concurrency`` 16 no-op handlers. The same
  jobs are run with idempotency off (``@jobs.job("noop")``) and on (``idempotent=True``), in
  alternating rounds; the target is at least 60% of the off throughput with it on: the DynamoDB round
  trips of concurrent handlers overlap instead of adding up.

A feeder keeps the queue's depth near ``--depth`` (40) while the worker runs, with its own
uninstrumented client: moto's cost per SQS receive grows with the queue's depth (~40 ms at 50
messages, ~290 ms at 400 on the reference machine), which would otherwise measure moto, not cloudjobs.
DynamoDB runs on Amazon's DynamoDB Local by default (``--dynamodb moto`` for moto's), a separate server
as in AWS; install it with ``scripts/install-dynamodb-local``.

Run: ``python bench/idempotency.py`` (``--messages 400 --rounds 3 --concurrency 16 --latency-ms 10``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from cloudjobs import CloudJobs, Settings
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.local import LocalAwsServer, local_environment
from cloudjobs.provisioning import QueueSpec, TableSpec, delete_table, provision_queue, provision_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient

MODES = ("off", "on")
READS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan"})
MARKER_READ = "BatchGetItem"
TRANSACTIONS = frozenset({"TransactWriteItems", "TransactGetItems"})


@dataclass(slots=True)
class Measurement:
    """One round of one mode."""

    messages: int
    seconds: float
    requests: Counter[str] = field(default_factory=Counter)

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds


def instrumented_session(counter: Counter[str], latency_seconds: float) -> boto3.Session:
    """A session whose clients count calls by operation and wait ``latency_seconds`` before each send."""
    session = boto3.Session()
    lock = threading.Lock()

    def count(model: Any, **_: Any) -> None:
        with lock:
            counter[f"{model.service_model.service_name}:{model.name}"] += 1

    def delay(**_: Any) -> None:
        time.sleep(latency_seconds)  # the simulated network round trip; returning None sends for real

    session.events.register("before-call", count)
    if latency_seconds:
        session.events.register("before-send", delay)
    return session


def run_round(
    mode: str, arguments: argparse.Namespace, sqs: SQSClient, dynamodb: DynamoDBClient
) -> Measurement:
    """A worker consuming ``messages`` no-op jobs on a fresh queue and table, idempotency on or off."""
    name = f"bench-{uuid.uuid4().hex[:12]}"
    queue = provision_queue(QueueSpec(name, visibility_timeout_seconds=30), client=sqs)
    table = TableSpec(name)
    provision_table(table, client=dynamodb)
    counter: Counter[str] = Counter()
    session = instrumented_session(counter, arguments.latency_ms / 1000)
    concurrency = arguments.concurrency
    backend = SqsBackend(
        queue_url=queue.queue_url, session=session, max_pool_connections=concurrency + 4, wait_time_seconds=1
    )
    store = DynamoDbIdempotencyStore(table.name, session=session, max_pool_connections=concurrency + 4)
    settings = Settings(
        _env_file=None, queue_url=queue.queue_url, wait_time_seconds=1, concurrency=concurrency
    )
    jobs = CloudJobs(settings=settings, backend=backend, idempotency_store=store)

    @jobs.job("noop", idempotent=mode == "on")
    def noop(payload: dict[str, int]) -> None:
        return None

    payloads = [("noop", {"n": index}) for index in range(arguments.messages)]
    measurement = consume(jobs, queue.queue_url, payloads, counter, depth=arguments.depth)
    backend.close()
    delete_table(table, client=dynamodb)
    return measurement


def consume(
    jobs: CloudJobs,
    queue_url: str,
    payloads: list[tuple[str, dict[str, int]]],
    counter: Counter[str],
    *,
    depth: int,
) -> Measurement:
    """Run a worker until every payload's job completed, feeding the queue to stay near ``depth``.

    The feeder's own requests go through an uninstrumented client: they are neither counted nor
    delayed. Returns the time from the worker's start to the last completion, and its requests.
    """
    producer = CloudJobs(
        settings=Settings(_env_file=None, queue_url=queue_url), backend=SqsBackend(queue_url=queue_url)
    )
    worker = jobs.worker(shutdown_timeout=10)
    thread = threading.Thread(target=worker.run, name="bench-worker")
    base = worker.counts["completed"]
    sent = 0
    counter.clear()
    started = time.monotonic()
    thread.start()
    while (done := worker.counts["completed"] - base) < len(payloads):
        if sent < len(payloads) and sent - done < depth:
            batch = payloads[sent : sent + 10]
            producer.enqueue_many(batch)
            sent += len(batch)
        else:
            time.sleep(0.01)
    seconds = time.monotonic() - started
    requests = Counter(counter)
    worker.stop()
    thread.join()
    return Measurement(messages=len(payloads), seconds=seconds, requests=requests)


def duplicates_round(arguments: argparse.Namespace, sqs: SQSClient, dynamodb: DynamoDBClient) -> Measurement:
    """Run jobs, then send each again: the copies find their record completed. The copies' cost."""
    name = f"bench-{uuid.uuid4().hex[:12]}"
    queue = provision_queue(QueueSpec(name, visibility_timeout_seconds=30), client=sqs)
    table = TableSpec(name)
    provision_table(table, client=dynamodb)
    counter: Counter[str] = Counter()
    session = instrumented_session(counter, 0)
    backend = SqsBackend(queue_url=queue.queue_url, session=session, wait_time_seconds=1)
    store = DynamoDbIdempotencyStore(table.name, session=session)
    settings = Settings(_env_file=None, queue_url=queue.queue_url, wait_time_seconds=1, concurrency=4)
    jobs = CloudJobs(settings=settings, backend=backend, idempotency_store=store)

    @jobs.job("charge", idempotency_key="order")
    def charge(payload: dict[str, int]) -> int:
        return payload["order"]

    payloads = [("charge", {"order": index}) for index in range(arguments.messages // 4)]
    consume(jobs, queue.queue_url, payloads, counter, depth=arguments.depth)
    measurement = consume(jobs, queue.queue_url, payloads, counter, depth=arguments.depth)
    backend.close()
    delete_table(table, client=dynamodb)
    return measurement


def dynamodb_requests(measurement: Measurement) -> Counter[str]:
    """The DynamoDB operations of a measurement, without their service prefix."""
    return Counter(
        {
            name.split(":", 1)[1]: count
            for name, count in measurement.requests.items()
            if name.startswith("dynamodb:")
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    parser.add_argument("--depth", type=int, default=40, help="queue depth the feeder keeps")
    parser.add_argument(
        "--dynamodb",
        choices=("dynamodb-local", "moto"),
        default="dynamodb-local",
        help="where DynamoDB runs (SQS always runs on moto)",
    )
    arguments = parser.parse_args(argv)

    results: dict[str, list[Measurement]] = {mode: [] for mode in MODES}
    with LocalAwsServer() as server, contextlib.ExitStack() as stack:
        os.environ.update(local_environment(server.endpoint_url))
        if arguments.dynamodb == "dynamodb-local":
            # The test suite's launcher (scripts/install-dynamodb-local installs the server).
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.dynamodb_local import DynamoDbLocal

            dynamodb_local = stack.enter_context(DynamoDbLocal())
            os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = dynamodb_local.endpoint_url
        sqs: SQSClient = boto3.client("sqs")
        dynamodb: DynamoDBClient = boto3.client("dynamodb")
        for round_number in range(arguments.rounds):
            order = MODES if round_number % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                measurement = run_round(mode, arguments, sqs, dynamodb)
                results[mode].append(measurement)
                print(
                    f"round {round_number + 1} idempotency {mode:<3} {measurement.per_second:6.0f} jobs/s  "
                    f"{dict(measurement.requests)}",
                    file=sys.stderr,
                )
        duplicates = duplicates_round(arguments, sqs, dynamodb)
        sqs.close()
        dynamodb.close()
    return report(results, duplicates, arguments)


def report(
    results: dict[str, list[Measurement]], duplicates: Measurement, arguments: argparse.Namespace
) -> int:
    """Print the figures as Markdown; returns 1 when a target is missed."""
    off = statistics.median(m.per_second for m in results["off"])
    on = statistics.median(m.per_second for m in results["on"])
    happy = [dynamodb_requests(m) for m in results["on"]]
    duplicate_requests = dynamodb_requests(duplicates)
    # The cancellation markers of each received batch are read with one BatchGetItem (a tenth of a
    # request per job at full batches), whether the jobs keep a record or not: counted apart.
    per_job = max(_record_requests(requests) / arguments.messages for requests in happy)
    per_duplicate = _record_requests(duplicate_requests) / duplicates.messages
    marker_reads = max(requests[MARKER_READ] / arguments.messages for requests in happy)
    reads = sum(requests[op] for requests in [*happy, duplicate_requests] for op in READS - {MARKER_READ})
    transactions = sum(requests[op] for requests in [*happy, duplicate_requests] for op in TRANSACTIONS)
    print(
        f"\n{arguments.messages} no-op jobs per round, {arguments.concurrency} handlers, "
        f"{arguments.latency_ms:g} ms added to every AWS call; median of {arguments.rounds} alternating "
        f"rounds; SQS on a local moto server, DynamoDB on {arguments.dynamodb}\n"
    )
    print("| metric | value | target |")
    print("|---|---|---|")
    print(f"| throughput, idempotency off (jobs/s) | {off:.0f} | |")
    print(f"| throughput, idempotency on (jobs/s) | {on:.0f} | |")
    print(f"| on / off | {on / off:.1%} | ≥ 60% |")
    print(f"| DynamoDB record requests per idempotent job (happy path) | {per_job:.3f} | ≤ 2 |")
    print(f"| DynamoDB record requests per duplicate of a completed job | {per_duplicate:.3f} | 1 |")
    print(f"| cancellation-marker reads per job (one BatchGetItem a batch) | {marker_reads:.3f} | ≤ 0.1 |")
    print(f"| other DynamoDB reads (GetItem, Query, Scan) | {reads} | 0 |")
    print(f"| DynamoDB transactional requests | {transactions} | 0 |")
    worst: Counter[str] = max(happy, key=lambda requests: requests.total())
    print(f"\nhappy path, by operation (worst round): {dict(worst)}")
    print(f"duplicates, by operation: {dict(duplicate_requests)}")
    is_met = (
        on / off >= 0.6
        and per_job <= 2
        and per_duplicate <= 1
        and marker_reads <= 0.1
        and reads == 0
        and transactions == 0
    )
    print("\nall targets met" if is_met else "\nTARGET MISSED")
    return 0 if is_met else 1


def _record_requests(requests: Counter[str]) -> int:
    return sum(count for operation, count in requests.items() if operation != MARKER_READ)


if __name__ == "__main__":
    sys.exit(main())

"""Idempotency's cost: DynamoDB requests and client CPU per job, and worker throughput with
idempotency on vs off.

One run, against one moto server (its own process), on a fresh queue and table per round:

- **request economy**: every AWS call the worker makes is counted by operation with a botocore
  ``before-call`` hook, and reported per job as DynamoDB writes and reads. The happy path of an
  idempotent job must cost exactly two writes (UpdateItem to take the lease, UpdateItem to complete),
  a duplicate of a completed job one (the failed conditional UpdateItem answers with the stored
  record), and no transactional writes (they cost twice the write units). Reads: none per job; the
  worker reads the cancellation register (one GetItem, counted apart) at most once a second while
  batches arrive, and no marker (see docs/idempotency.md for why the lease write cannot see one).
- **throughput**: a ``before-send`` hook adds a simulated 10 ms round trip to every AWS call (SQS and
  DynamoDB alike, as in a region), and the worker runs ``--concurrency`` 16 no-op handlers. The same
  jobs are run with idempotency off (``@jobs.job("noop")``) and on (``idempotent=True``), in
  alternating rounds; the target is at least 60% of the off throughput with it on: the DynamoDB round
  trips of concurrent handlers overlap instead of adding up.
- **client CPU**: the process's CPU time per job in each round (the worker's, and the feeder's few
  SendMessageBatch calls, the same in every mode), and in rounds of **bare** calls: ``--concurrency``
  threads making two plain boto3 ``UpdateItem`` calls per job through a client of a plain boto3
  session with the same hooks and latency, and nothing else (the worker's clients are built as
  cloudjobs builds its own, with JSON parsed and serialized from plans). Each botocore call costs
  hundreds of microseconds of client CPU (serialisation, signing, parsing), so this is the floor an
  idempotent job cannot go under; the target is CPU(on) ≤ 1.25 × (CPU(off) + CPU(bare)), i.e. what
  cloudjobs adds around its two writes is at most a quarter of the unavoidable.

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
from botocore.config import Config

from cloudjobs import CloudJobs, Settings
from cloudjobs.aws_clients import new_session
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.idempotency.dynamodb_register import REGISTER_KEY
from cloudjobs.local import LocalAwsServer, local_environment
from cloudjobs.provisioning import QueueSpec, TableSpec, delete_table, provision_queue, provision_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient

MODES = ("off", "on", "bare")
READS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
REGISTER_READ = "GetItem of the cancellation register"
TRANSACTIONS = frozenset({"TransactWriteItems", "TransactGetItems"})
CPU_TARGET = 1.25


@dataclass(slots=True)
class Measurement:
    """One round of one mode."""

    messages: int
    seconds: float
    requests: Counter[str] = field(default_factory=Counter)
    cpu_seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_per_job_us(self) -> float:
        """Process CPU time per job, in microseconds."""
        return self.cpu_seconds / self.messages * 1e6


def instrumented_session(
    counter: Counter[str], latency_seconds: float, *, plain: bool = False
) -> boto3.Session:
    """A session whose clients count calls by operation and wait ``latency_seconds`` before each send:
    one as cloudjobs makes its own (``new_session()``, whose clients parse and serialize JSON from
    plans), or with ``plain`` a plain boto3 session."""
    session = boto3.Session() if plain else new_session()
    lock = threading.Lock()

    def count(model: Any, **_: Any) -> None:
        with lock:
            counter[f"{model.service_model.service_name}:{model.name}"] += 1

    def count_register_read(params: Any, **_: Any) -> None:
        # Counted again apart from the GetItem calls (the API parameters are read here, before the
        # request is built).
        if params.get("Key", {}).get("pk", {}).get("S") == REGISTER_KEY:
            with lock:
                counter[f"dynamodb:{REGISTER_READ}"] += 1

    def delay(**_: Any) -> None:
        time.sleep(latency_seconds)  # the simulated network round trip; returning None sends for real

    session.events.register("before-call", count)
    session.events.register("before-parameter-build.dynamodb.GetItem", count_register_read)
    if latency_seconds:
        session.events.register("before-send", delay)
    return session


def run_round(
    mode: str, arguments: argparse.Namespace, sqs: SQSClient, dynamodb: DynamoDBClient
) -> Measurement:
    """A worker consuming ``messages`` no-op jobs on a fresh queue and table, idempotency on or off;
    ``bare``: two plain UpdateItem calls per job instead (see :func:`bare_round`)."""
    if mode == "bare":
        return bare_round(arguments, dynamodb)
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
    # Clients are built before the clock starts, as in the bare rounds: their construction is not
    # a job's cost.
    _ = backend.client, store.client
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
    cpu_started = time.process_time()
    thread.start()
    while (done := worker.counts["completed"] - base) < len(payloads):
        if sent < len(payloads) and sent - done < depth:
            batch = payloads[sent : sent + 10]
            producer.enqueue_many(batch)
            sent += len(batch)
        else:
            time.sleep(0.01)
    seconds = time.monotonic() - started
    cpu_seconds = time.process_time() - cpu_started
    requests = Counter(counter)
    worker.stop()
    thread.join()
    return Measurement(messages=len(payloads), seconds=seconds, requests=requests, cpu_seconds=cpu_seconds)


def bare_round(arguments: argparse.Namespace, dynamodb: DynamoDBClient) -> Measurement:
    """Two plain boto3 UpdateItem calls per job, from ``--concurrency`` threads sharing one client of
    a plain boto3 session with the worker's hooks and latency: the client CPU floor of
    an idempotent job's two writes."""
    table = TableSpec(f"bench-{uuid.uuid4().hex[:12]}")
    provision_table(table, client=dynamodb)
    counter: Counter[str] = Counter()
    session = instrumented_session(counter, arguments.latency_ms / 1000, plain=True)
    client: DynamoDBClient = session.client(
        "dynamodb", config=Config(max_pool_connections=arguments.concurrency + 4)
    )
    keys = iter(range(arguments.messages))
    lock = threading.Lock()

    def write_two() -> None:
        while True:
            with lock:
                index = next(keys, None)
            if index is None:
                return
            for status in ("in_progress", "completed"):
                client.update_item(
                    TableName=table.name,
                    Key={"pk": {"S": f"noop#{index}"}},
                    UpdateExpression="SET #status = :status",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues={":status": {"S": status}},
                )

    client.describe_table(TableName=table.name)  # connect and resolve before the clock starts
    counter.clear()
    threads = [threading.Thread(target=write_two) for _ in range(arguments.concurrency)]
    started, cpu_started = time.monotonic(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    measurement = Measurement(
        messages=arguments.messages,
        seconds=time.monotonic() - started,
        requests=Counter(counter),
        cpu_seconds=time.process_time() - cpu_started,
    )
    client.close()
    delete_table(table, client=dynamodb)
    return measurement


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
                    f"round {round_number + 1} idempotency {mode:<4} {measurement.per_second:6.0f} jobs/s  "
                    f"{measurement.cpu_per_job_us:6.0f} µs CPU/job  {dict(measurement.requests)}",
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
    cpu = {mode: statistics.median(m.cpu_per_job_us for m in results[mode]) for mode in MODES}
    cpu_ratio = cpu["on"] / (cpu["off"] + cpu["bare"])
    happy = [dynamodb_requests(m) for m in results["on"]]
    duplicate_requests = dynamodb_requests(duplicates)
    writes_per_job = max(_count(requests, WRITES) / arguments.messages for requests in happy)
    writes_per_duplicate = _count(duplicate_requests, WRITES) / duplicates.messages
    # Reads by the jobs themselves (none), apart from the cancellation register: one GetItem a
    # second at most while batches arrive.
    register_reads = max(m.requests[f"dynamodb:{REGISTER_READ}"] / m.seconds for m in results["on"])
    # One read when the first batch arrives, then one a second at most.
    register_within = all(m.requests[f"dynamodb:{REGISTER_READ}"] <= m.seconds + 1 for m in results["on"])
    reads = sum(
        requests[op] - (requests[REGISTER_READ] if op == "GetItem" else 0)
        for requests in [*happy, duplicate_requests]
        for op in READS
    )
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
    print(f"| DynamoDB writes per idempotent job (happy path) | {writes_per_job:.3f} | 2 |")
    print(f"| DynamoDB writes per duplicate of a completed job | {writes_per_duplicate:.3f} | 1 |")
    print(f"| DynamoDB reads by jobs (GetItem, BatchGetItem, Query, Scan) | {reads} | 0 |")
    print(f"| cancellation register reads per second | {register_reads:.2f} | ≤ 1 (+ the first) |")
    print(f"| DynamoDB transactional requests | {transactions} | 0 |")
    print(f"| client CPU per job, idempotency off (µs) | {cpu['off']:.0f} | |")
    print(f"| client CPU per job, idempotency on (µs) | {cpu['on']:.0f} | |")
    print(f"| client CPU of two bare boto3 UpdateItem calls (µs) | {cpu['bare']:.0f} | |")
    print(f"| CPU on / (CPU off + two bare UpdateItem) | {cpu_ratio:.2f} | ≤ {CPU_TARGET} |")
    worst: Counter[str] = max(happy, key=lambda requests: requests.total())
    print(f"\nhappy path, by operation (worst round): {dict(worst)}")
    print(f"duplicates, by operation: {dict(duplicate_requests)}")
    is_met = (
        on / off >= 0.6
        and writes_per_job == 2
        and writes_per_duplicate == 1
        and register_within
        and reads == 0
        and transactions == 0
        and cpu_ratio <= CPU_TARGET
    )
    print("\nall targets met" if is_met else "\nTARGET MISSED")
    return 0 if is_met else 1


def _count(requests: Counter[str], operations: frozenset[str]) -> int:
    return sum(count for operation, count in requests.items() if operation in operations)


if __name__ == "__main__":
    sys.exit(main())

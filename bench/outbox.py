"""The transactional outbox's cost: relay throughput and commit-to-visible latency on PostgreSQL.

One run, one moto server and one PostgreSQL server (started here from the Debian binaries, as the
tests do, unless ``--database-url`` names one), a fresh queue and outbox table per round. Each
measurement is set beside a baseline measured in the same round on the same queue:

- **throughput**: ``--rows`` jobs already committed to the outbox, drained by one relay (claim ten
  rows, one SendMessageBatch, mark them, commit), against ``jobs.enqueue_many`` of as many jobs (the
  same SendMessageBatch calls, no database), each into an empty queue. moto's cost per send grows
  with the queue's depth, so the absolute rate falls as ``--rows`` grows; the ratio is the result.
- **latency**: ``--samples`` transactions, one at a time, each writing a business row and its job;
  the time from the commit's return to the message's arrival at a consumer long-polling the queue.
  The relay waits on ``LISTEN``, so a commit wakes it. Baseline: the business row committed, then
  ``jobs.enqueue`` called directly (the dual write the outbox replaces), timed from the same point.

Rounds alternate which contender goes first; the report gives medians over rounds and ratios
(outbox / baseline). Run: ``python bench/outbox.py`` (``--rows 500 --samples 200 --rounds 3``).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3

# Run as a script (python bench/outbox.py), this directory is on the path, the repository not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Column, Engine, MetaData, String, Table, create_engine, insert
from sqlalchemy.orm import Session

from cloudjobs import CloudJobs
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.local import LocalAwsServer, local_environment
from cloudjobs.outbox import Outbox
from cloudjobs.provisioning import QueueSpec, delete_queue, provision_queue
from tests.outbox_postgres import PostgresServer

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

CONTENDERS = ("outbox", "direct")
_POLL_SECONDS = 0.002


@dataclass(frozen=True, slots=True)
class Round:
    """One contender's figures in one round."""

    per_second: float
    p50_ms: float
    p99_ms: float


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


class Arrivals:
    """A consumer long-polling the queue: when each job id arrived (monotonic seconds)."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url
        self._seen: dict[str, float] = {}
        self._condition = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)

    def __enter__(self) -> Arrivals:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _receive(self) -> None:
        import json

        while not self._stop.is_set():
            response = self._client.receive_message(
                QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = response.get("Messages", [])
            now = time.perf_counter()
            with self._condition:
                for message in messages:
                    self._seen[json.loads(message["Body"])["id"]] = now
                self._condition.notify_all()
            if messages:
                self._client.delete_message_batch(
                    QueueUrl=self._queue_url,
                    Entries=[
                        {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                        for index, message in enumerate(messages)
                    ],
                )

    def wait(self, job_id: str, timeout: float = 60.0) -> float:
        """When ``job_id`` arrived (waits for it)."""
        with self._condition:
            if not self._condition.wait_for(lambda: job_id in self._seen, timeout=timeout):
                raise TimeoutError(f"job {job_id} never arrived")
            return self._seen[job_id]


@contextmanager
def running_relay(outbox: Outbox) -> Iterator[Callable[[], int]]:
    """A relay on its own thread; yields a function returning the rows it sent so far."""
    relay = outbox.relay()
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        yield lambda: relay.report.sent
    finally:
        relay.stop()
        thread.join()


@dataclass(frozen=True, slots=True)
class Setup:
    """A fresh queue, app, outbox table and business table."""

    jobs: CloudJobs
    outbox: Outbox
    engine: Engine
    orders: Table
    queue_url: str


@contextmanager
def fresh(database_url: str, client: SQSClient) -> Iterator[Setup]:
    spec = QueueSpec(f"bench-outbox-{uuid.uuid4().hex[:12]}")
    queue = provision_queue(spec, client=client)
    backend = SqsBackend(queue_url=queue.queue_url)
    jobs = CloudJobs(backend=backend)
    engine = create_engine(database_url, pool_size=10)
    suffix = uuid.uuid4().hex[:12]
    outbox = Outbox(jobs, engine, table_name=f"bench_outbox_{suffix}")
    outbox.create_table()
    orders = Table(f"bench_orders_{suffix}", MetaData(), Column("id", String(36), primary_key=True))
    orders.create(engine)
    try:
        yield Setup(jobs, outbox, engine, orders, queue.queue_url)
    finally:
        outbox.table.drop(engine)
        orders.drop(engine)
        engine.dispose()
        backend.close()
        delete_queue(spec, client=client)


def run_round(name: str, database_url: str, client: SQSClient, arguments: argparse.Namespace) -> Round:
    # A queue for each part: the latency part starts on an empty queue.
    with fresh(database_url, client) as setup:
        per_second = throughput(name, setup, arguments.rows)
    with fresh(database_url, client) as setup:
        latencies = latency(name, setup, client, arguments.samples)
    return Round(per_second, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000)


def throughput(name: str, setup: Setup, rows: int) -> float:
    if name == "direct":
        started = time.perf_counter()
        setup.jobs.enqueue_many([("confirm-order", {"order": str(index)}) for index in range(rows)])
        return rows / (time.perf_counter() - started)
    for first in range(0, rows, 10):
        with Session(setup.engine) as session, session.begin():
            for index in range(first, min(first + 10, rows)):
                setup.outbox.enqueue(session, "confirm-order", {"order": str(index)})
    with running_relay(setup.outbox) as sent:
        started = time.perf_counter()
        while sent() < rows:
            time.sleep(_POLL_SECONDS)
        return rows / (time.perf_counter() - started)


def latency(name: str, setup: Setup, client: SQSClient, samples: int) -> list[float]:
    latencies: list[float] = []
    with Arrivals(client, setup.queue_url) as arrivals, running_relay(setup.outbox):
        for _ in range(samples):
            order_id = str(uuid.uuid4())
            with Session(setup.engine) as session, session.begin():
                session.execute(insert(setup.orders).values(id=order_id))
                if name == "outbox":
                    job_id = setup.outbox.enqueue(session, "confirm-order", {"order": order_id})
            committed = time.perf_counter()
            if name == "direct":
                job_id = setup.jobs.enqueue("confirm-order", {"order": order_id})
            latencies.append(arrivals.wait(job_id) - committed)
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the outbox relay vs direct enqueue, PostgreSQL and moto")
    parser.add_argument("--rows", type=int, default=500, help="jobs drained in the throughput part")
    parser.add_argument("--samples", type=int, default=200, help="transactions in the latency part")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", help="a PostgreSQL to use (default: start one)")
    arguments = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers this run started are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    results: dict[str, list[Round]] = {name: [] for name in CONTENDERS}
    with LocalAwsServer() as aws, database(arguments.database_url) as database_url:
        os.environ.update(local_environment(aws.endpoint_url))
        client = boto3.client("sqs")
        for round_number in range(arguments.rounds):
            # Alternate who goes first, so drift on the shared machine falls on both alike.
            order = CONTENDERS if round_number % 2 == 0 else tuple(reversed(CONTENDERS))
            for name in order:
                measured = run_round(name, database_url, client, arguments)
                results[name].append(measured)
                print(
                    f"round {round_number + 1} {name:<7} {measured.per_second:7.0f} jobs/s  "
                    f"latency p50 {measured.p50_ms:6.1f} ms  p99 {measured.p99_ms:6.1f} ms",
                    file=sys.stderr,
                )
        client.close()
    report(results, arguments)
    return 0


@contextmanager
def database(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    with PostgresServer() as server:
        yield server.url()


def report(results: dict[str, list[Round]], arguments: argparse.Namespace) -> None:
    def median(name: str, field: str) -> float:
        return float(statistics.median(getattr(measured, field) for measured in results[name]))

    print(
        f"outbox relay on PostgreSQL vs direct enqueue, SQS on moto: {arguments.rows} jobs drained, "
        f"{arguments.samples} single-job transactions, medians of {arguments.rounds} rounds"
    )
    print(f"{'':28}{'outbox':>10}{'direct':>10}{'ratio':>8}")
    for label, field in (
        ("throughput (jobs/s)", "per_second"),
        ("commit to visible p50 (ms)", "p50_ms"),
        ("commit to visible p99 (ms)", "p99_ms"),
    ):
        outbox, direct = median("outbox", field), median("direct", field)
        print(f"{label:<28}{outbox:>10.1f}{direct:>10.1f}{outbox / direct:>8.2f}")


if __name__ == "__main__":
    raise SystemExit(main())

"""Priorities: how soon a critical job starts behind a bulk backlog, on a queue of its own or on a
queue shared with the backlog; and what several queues cost in SQS requests, under load and idle.

One local moto server (its own process), the worker in this process, requests counted with botocore
``before-call`` hooks (``counting_session`` from ``bench/throughput.py``; depth probes uncounted):

1. **Pickup latency**: 5,000 bulk jobs (50 ms of work each) keep the eight handlers busy, then a
   critical job (no work) is enqueued every 50 ms, 100 of them; latency runs from just before its
   ``enqueue`` to the start of its handler. On fresh queues each: one shared queue, weighted
   (``{"critical": 6, "bulk": 1}``), weighted with ``queue_concurrency={"bulk": 6}``, strict order.
   moto slows down with depth (a receive takes ~2.5 s at 5,000 messages; 5,000 sends take minutes),
   so the producer feeds the backlog keeping the bulk queue near ``--depth`` (100), as
   ``bench/throughput.py`` does: the bulk queue never runs dry, and on the shared queue a critical
   job waits behind ~100 bulk jobs, not 5,000 (the report says how long 5,000 would take).
2. **Requests per message under load**: no-op jobs on one queue, then three (6:3:1), each held near
   ``--depth``: the worker's requests (start-up included) per job completed, the producer's sends.
3. **Idle requests per minute**: idle workers on one queue and on three side by side (default 20 s
   long poll, 60 s queue gauges), counted over ``--idle-seconds`` after start-up.

Run: ``python bench/priorities.py`` (``--backlog 5000 --critical 100 --every 0.05 --concurrency 8
--depth 100 --idle-seconds 60``); about four minutes.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

# Run as a script (python bench/priorities.py), this directory is on the path, the repository not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import counting_session
from cloudjobs import CloudJobs, Settings
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.local import LocalAwsServer, local_environment
from cloudjobs.provisioning import QueueSpec, provision_queue
from cloudjobs.runtimes.worker import Worker

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

_DEADLINE = 300.0
"""Seconds any phase may take before the bench gives up."""
_WARM_UP = 100
"""Bulk jobs completed before the first critical job is sent: every handler is busy by then."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """Where critical and bulk jobs go, and what the worker consumes."""

    label: str
    critical_queue: str
    bulk_queue: str
    worker: Mapping[str, Any] = field(default_factory=dict)


def scenarios(concurrency: int) -> list[Scenario]:
    """The pickup-latency scenarios, the shared queue first."""
    weights = {"critical": 6, "bulk": 1}
    return [
        Scenario("one shared queue", "default", "default"),
        Scenario("weighted critical=6, bulk=1", "critical", "bulk", {"queues": weights}),
        Scenario(
            f"weighted, queue_concurrency bulk={concurrency - 2}",
            "critical",
            "bulk",
            {"queues": weights, "queue_concurrency": {"bulk": concurrency - 2}},
        ),
        Scenario("strict order critical > bulk", "critical", "bulk", {"queues": ["critical", "bulk"]}),
    ]


# -- apps on fresh queues -------------------------------------------------------------------------


@dataclass
class Queues:
    """Fresh queues, by their name in the app, and the depth probe's client."""

    urls: dict[str, str]
    admin: SQSClient

    def depth(self, queue: str) -> int:
        """A queue's visible messages (not counted)."""
        attributes = self.admin.get_queue_attributes(
            QueueUrl=self.urls[queue], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])


def fresh_queues(admin: SQSClient, names: Sequence[str]) -> Queues:
    """New queues (with DLQs) for ``names`` (``default`` and named ones)."""
    urls = {
        name: provision_queue(QueueSpec(f"prio-{name}-{uuid.uuid4().hex[:8]}"), client=admin).queue_url
        for name in names
    }
    return Queues(urls, admin)


@contextmanager
def app_on(queues: Queues, requests: Counter[str], concurrency: int) -> Iterator[CloudJobs]:
    """An app on ``queues`` whose every SQS request is counted in ``requests``; closed after."""
    session = counting_session(requests)
    backends = {
        name: SqsBackend(queue_url=url, session=session, max_pool_connections=concurrency + 4)
        for name, url in queues.urls.items()
    }
    default = backends.pop("default", None)
    jobs = CloudJobs(
        settings=Settings(_env_file=None, queue_url=queues.urls.get("default"), concurrency=concurrency),
        backend=default,
        queues=dict(backends) or None,
    )
    try:
        yield jobs
    finally:
        for backend in [*backends.values(), *([default] if default else [])]:
            backend.close()


class Feeder:
    """Sends ``total`` jobs of one type to one queue in tens, keeping its depth near ``depth``."""

    def __init__(
        self, producer: CloudJobs, queues: Queues, queue: str, job_type: str, *, total: int, depth: int
    ) -> None:
        self._producer, self._queues, self._queue = producer, queues, queue
        self._job_type, self._total, self._depth = job_type, total, depth
        self._stopped = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name=f"feeder-{queue}", daemon=True)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._thread.join(_DEADLINE)

    @property
    def is_exhausted(self) -> bool:
        """True once every job was sent (the queue may run dry from then on)."""
        return self.sent >= self._total

    def _run(self) -> None:
        while not self._stopped.is_set() and self.sent < self._total:
            if self._queues.depth(self._queue) >= self._depth:
                self._stopped.wait(0.01)  # pacing the producer, not synchronising
                continue
            batch = min(10, self._total - self.sent)
            self._producer.enqueue_many(
                [(self._job_type, {"n": self.sent + i}) for i in range(batch)], queue=self._queue
            )
            self.sent += batch


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """Run ``worker`` in a thread for the ``with`` block."""
    thread = threading.Thread(target=worker.run, name="bench-worker")
    thread.start()
    if not worker.started.wait(_DEADLINE):
        raise RuntimeError("the worker did not start")
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(_DEADLINE)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; give up at the deadline."""
    deadline = time.monotonic() + _DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {_DEADLINE:.0f}s")
        time.sleep(0.01)


# -- 1. pickup latency ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pickup:
    """One scenario's critical-job latencies (seconds) and the bulk throughput meanwhile."""

    latencies: list[float]
    bulk_per_second: float
    ran_dry: bool

    def percentile(self, share: float) -> float:
        """The nearest-rank percentile of the latencies (``share`` in (0, 1])."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def measure_pickup(scenario: Scenario, admin: SQSClient, arguments: argparse.Namespace) -> Pickup:
    """Keep the worker busy with bulk jobs, send the critical ones, and time their starts."""
    names = sorted({scenario.critical_queue, scenario.bulk_queue})
    queues = fresh_queues(admin, names)
    enqueued: dict[int, float] = {}
    started: dict[int, float] = {}
    bulk_done = Counter[str]()
    lock = threading.Lock()
    with (
        app_on(queues, Counter(), arguments.concurrency) as jobs,
        app_on(queues, Counter(), arguments.concurrency) as producer,
    ):

        @jobs.job("bulk", queue=scenario.bulk_queue)
        def bulk(payload: dict[str, int]) -> None:
            time.sleep(arguments.bulk_seconds)  # the bulk job's work
            with lock:
                bulk_done["jobs"] += 1

        @jobs.job("critical", queue=scenario.critical_queue)
        def critical(payload: dict[str, int]) -> None:
            started[payload["n"]] = time.monotonic()

        worker = jobs.worker(**scenario.worker)
        feeder = Feeder(
            producer, queues, scenario.bulk_queue, "bulk", total=arguments.backlog, depth=arguments.depth
        )
        with feeder, running(worker):
            wait_until(lambda: bulk_done["jobs"] >= _WARM_UP, "warm-up")
            window_start, bulk_before = time.monotonic(), bulk_done["jobs"]
            for n in range(arguments.critical):
                enqueued[n] = time.monotonic()
                producer.enqueue("critical", {"n": n}, queue=scenario.critical_queue)
                time.sleep(max(0.0, enqueued[n] + arguments.every - time.monotonic()))  # the send rate
            wait_until(lambda: len(started) == arguments.critical, "critical starts")
            window = time.monotonic() - window_start
            bulk_per_second = (bulk_done["jobs"] - bulk_before) / window
            ran_dry = feeder.is_exhausted
    return Pickup([started[n] - enqueued[n] for n in range(arguments.critical)], bulk_per_second, ran_dry)


# -- 2. requests per message under load ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    """The worker's requests for the ``messages`` jobs it completed; the producer's for the ``sent``
    it sent (the queues still hold some when the run ends)."""

    messages: int
    sent: int
    worker_requests: Counter[str]
    producer_requests: Counter[str]

    @property
    def worker_per_message(self) -> float:
        return sum(self.worker_requests.values()) / self.messages

    @property
    def producer_per_message(self) -> float:
        return sum(self.producer_requests.values()) / self.sent


def measure_load(weights: Mapping[str, int], admin: SQSClient, arguments: argparse.Namespace) -> Load:
    """No-op jobs on every queue of ``weights``, each held near the depth, until ``--load-messages``
    completed."""
    queues = fresh_queues(admin, list(weights))
    worker_requests: Counter[str] = Counter()
    producer_requests: Counter[str] = Counter()
    with (
        app_on(queues, worker_requests, arguments.concurrency) as jobs,
        app_on(queues, producer_requests, arguments.concurrency) as producer,
    ):
        for name in weights:

            @jobs.job(f"noop-{name}", queue=name)
            def noop(payload: dict[str, int]) -> None:
                return None

        worker = jobs.worker(queues=dict(weights) if len(weights) > 1 else None)
        feeders = [
            Feeder(
                producer, queues, name, f"noop-{name}", total=arguments.load_messages, depth=arguments.depth
            )
            for name in weights
        ]
        with ExitStack() as stack:
            for feeder in feeders:
                stack.enter_context(feeder)
            stack.enter_context(running(worker))
            wait_until(lambda: worker.counts["completed"] >= arguments.load_messages, "the load done")
    # Read after the stop: its last deletes are counted, and so are the jobs they settled.
    sent = sum(feeder.sent for feeder in feeders)
    return Load(worker.counts["completed"], sent, Counter(worker_requests), Counter(producer_requests))


# -- 3. idle requests -----------------------------------------------------------------------------


def measure_idle(admin: SQSClient, arguments: argparse.Namespace) -> dict[int, Counter[str]]:
    """Two idle workers side by side, on one queue and on three: their requests per minute."""
    layouts = {1: ["default"], 3: ["default", "critical", "bulk"]}
    counters: dict[int, Counter[str]] = {size: Counter() for size in layouts}
    with ExitStack() as stack:
        for size, names in layouts.items():
            jobs = stack.enter_context(
                app_on(fresh_queues(admin, names), counters[size], arguments.concurrency)
            )
            stack.enter_context(running(jobs.worker(queues=names if size > 1 else None)))
        time.sleep(2.0)  # start-up requests (queue attributes, the first gauges) settle
        before = {size: Counter(counter) for size, counter in counters.items()}
        time.sleep(arguments.idle_seconds)  # the measurement window itself
        after = {size: Counter(counter) for size, counter in counters.items()}
    minutes = arguments.idle_seconds / 60
    return {
        size: Counter(
            {operation: count / minutes for operation, count in (after[size] - before[size]).items()}
        )
        for size in layouts
    }


# -- the report -----------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def report(
    pickups: dict[str, Pickup],
    loads: dict[str, Load],
    idle: dict[int, Counter[str]],
    arguments: argparse.Namespace,
) -> None:
    """Print the three tables (Markdown)."""
    print(
        f"\nPickup latency: {arguments.backlog} bulk jobs ({arguments.bulk_seconds * 1000:.0f} ms each, "
        f"queue held near {arguments.depth}), then {arguments.critical} critical jobs, one every "
        f"{arguments.every * 1000:.0f} ms; concurrency {arguments.concurrency}, local moto server\n"
    )
    rows = [
        [
            label,
            f"{pickup.percentile(0.5) * 1000:.0f} ms",
            f"{pickup.percentile(0.99) * 1000:.0f} ms",
            f"{pickup.bulk_per_second:.0f}" + (" (backlog ran out)" if pickup.ran_dry else ""),
        ]
        for label, pickup in pickups.items()
    ]
    print(table(["worker", "critical p50", "critical p99", "bulk jobs/s meanwhile"], rows))
    shared = pickups["one shared queue"].bulk_per_second
    print(
        f"\nBehind a real backlog of {arguments.backlog} on the shared queue a critical job would wait "
        f"about {arguments.backlog / shared:.0f} s ({arguments.backlog} / {shared:.0f} bulk jobs/s)."
    )
    print(f"\nRequests per message under load: no-op jobs, each queue held near {arguments.depth}\n")
    operations = sorted({operation for load in loads.values() for operation in load.worker_requests})
    rows = [
        ["jobs completed", *(str(load.messages) for load in loads.values())],
        ["worker requests per job", *(f"{load.worker_per_message:.3f}" for load in loads.values())],
        *(
            [
                operation,
                *(f"{load.worker_requests[operation] / load.messages:.3f}" for load in loads.values()),
            ]
            for operation in operations
        ),
        [
            "producer SendMessageBatch per job sent",
            *(f"{load.producer_per_message:.3f}" for load in loads.values()),
        ],
    ]
    print(table(["", *loads], rows))
    window = f"{arguments.idle_seconds:.0f} s (20 s long poll, gauges every 60 s)"
    print(f"\nIdle requests per minute over {window}\n")
    operations = sorted({operation for counter in idle.values() for operation in counter})
    rows = [
        ["all requests", f"{sum(idle[1].values()):.1f}", f"{sum(idle[3].values()):.1f}"],
        *([operation, f"{idle[1][operation]:.1f}", f"{idle[3][operation]:.1f}"] for operation in operations),
    ]
    print(table(["", "one queue", "three queues"], rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="critical-job pickup and request costs of several queues")
    parser.add_argument("--backlog", type=int, default=5000, help="bulk jobs waiting")
    parser.add_argument("--bulk-seconds", type=float, default=0.05, help="work per bulk job")
    parser.add_argument("--critical", type=int, default=100, help="critical jobs sent")
    parser.add_argument("--every", type=float, default=0.05, help="seconds between critical jobs")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--depth", type=int, default=100, help="depth the producer keeps per queue")
    parser.add_argument("--load-messages", type=int, default=1500, help="no-op jobs per load run")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    arguments = parser.parse_args(argv)
    # The worker logs each job at INFO: keep the bench's output to its tables.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with LocalAwsServer() as server:
        os.environ.update(local_environment(server.endpoint_url))
        admin = boto3.client("sqs")
        pickups: dict[str, Pickup] = {}
        for scenario in scenarios(arguments.concurrency):
            pickups[scenario.label] = pickup = measure_pickup(scenario, admin, arguments)
            print(f"{scenario.label}: p50 {pickup.percentile(0.5) * 1000:.0f} ms", file=sys.stderr)
        loads = {
            "one queue": measure_load({"default": 1}, admin, arguments),
            "three queues (6:3:1)": measure_load({"critical": 6, "default": 3, "bulk": 1}, admin, arguments),
        }
        print("load measured", file=sys.stderr)
        idle = measure_idle(admin, arguments)
        admin.close()
    report(pickups, loads, idle, arguments)
    return 0


if __name__ == "__main__":
    sys.exit(main())

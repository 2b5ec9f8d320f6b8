"""Limits' cost: DynamoDB requests per rate-limited and per concurrency-limited job, then (from
bench/limits_enqueue.py, unless ``--limits-only``) per unique enqueue and per ``result()`` wait.

Each measurement runs jobs through the consumer core (inline, on a memory queue: only DynamoDB is
measured) with the limits on a fresh idempotency table in DynamoDB Local (``--dynamodb moto`` for
moto's server), and counts every DynamoDB call by operation with a botocore ``before-call`` hook.
Heartbeat renewals of long jobs are not included (one UpdateItem per heartbeat interval per held
slot, as for the idempotency lease).

One function per measurement, each returning a :class:`Row`: add a measurement by adding a function
to :data:`MEASUREMENTS`.

Run: ``python bench/limits.py`` (``--jobs 200 --dynamodb dynamodb-local``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from cloudjobs import CloudJobs, MemoryBackend, Settings
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.limits import RateLimit
from cloudjobs.local import LocalAwsServer, local_environment
from cloudjobs.provisioning import TableSpec, delete_table, provision_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient


MARKER_READS = frozenset({"BatchGetItem", "GetItem"})
"""The cancellation markers' reads (one BatchGetItem per received batch), which every job pays with
or without limits: shown apart."""


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: what was measured, per what, and the DynamoDB calls by operation."""

    what: str
    per: str
    units: int
    operations: dict[str, int]

    @property
    def limit_requests(self) -> float:
        """The limits' requests per unit (every call but the cancellation markers' reads)."""
        return sum(n for name, n in self.operations.items() if name not in MARKER_READS) / self.units

    @property
    def marker_reads(self) -> float:
        """The cancellation markers' reads per unit."""
        return sum(n for name, n in self.operations.items() if name in MARKER_READS) / self.units


@dataclass(slots=True)
class Bench:
    """A table on the DynamoDB server and a client that counts its calls."""

    client: DynamoDBClient
    calls: Counter[str]
    jobs: int

    @contextlib.contextmanager
    def app(self) -> Iterator[tuple[CloudJobs, MemoryBackend, DynamoDbIdempotencyStore]]:
        """An app on a memory queue and a DynamoDB store on a fresh table (deleted after)."""
        spec = TableSpec(f"bench-limits-{uuid.uuid4().hex[:12]}")
        provision_table(spec, client=self.client)
        backend = MemoryBackend("bench")
        store = DynamoDbIdempotencyStore(spec.name, client=self.client)
        try:
            yield (
                CloudJobs(settings=Settings(_env_file=None), backend=backend, idempotency_store=store),
                backend,
                store,
            )
        finally:
            delete_table(spec, client=self.client)

    def count(self, run: Callable[[], int]) -> tuple[int, Counter[str]]:
        """Run ``run`` (it returns how many units it measured) and the DynamoDB calls it made."""
        self.calls.clear()
        units = run()
        return units, Counter(self.calls)


def _run_all(jobs: CloudJobs, backend: MemoryBackend) -> int:
    """Process every visible message once, inline, a received batch at a time as the runtimes do
    (its cancellation markers read in one BatchGetItem); returns how many were processed."""
    consumer = jobs.consumer()
    processed = 0
    while deliveries := backend.receive(max_messages=10, wait=timedelta(0)):
        consumer.begin_batch(deliveries)
        for delivery in deliveries:
            consumer.process(delivery)
            processed += 1
    return processed


def rate_limited_job(bench: Bench) -> Row:
    """A job under its rate limit: one conditional UpdateItem takes its start."""
    with bench.app() as (jobs, backend, _):
        jobs.job("send", rate_limit=RateLimit(100_000, timedelta(seconds=1)))(lambda payload: None)
        jobs.enqueue_many([("send", {"n": n}) for n in range(bench.jobs)])
        units, calls = bench.count(lambda: _run_all(jobs, backend))
    return Row("rate-limited job, under the limit", "job", units, dict(calls))


def rate_limited_deferral(bench: Bench) -> Row:
    """A job over its rate limit: the refused UpdateItem carries the time to try again."""
    with bench.app() as (jobs, backend, _):
        jobs.job("send", rate_limit=RateLimit(1, timedelta(hours=1), burst=1))(lambda payload: None)
        jobs.enqueue("send", {"n": -1})
        _run_all(jobs, backend)  # spends the budget
        jobs.enqueue_many([("send", {"n": n}) for n in range(bench.jobs)])
        units, calls = bench.count(lambda: _run_all(jobs, backend))
    return Row("rate-limited job, over the limit (deferred)", "deferral", units, dict(calls))


def concurrency_limited_job(bench: Bench) -> Row:
    """A job under its concurrency limit: take a slot, give it back."""
    with bench.app() as (jobs, backend, _):
        jobs.job("export", concurrency_limit=5)(lambda payload: None)
        jobs.enqueue("export", {"n": -1})
        _run_all(jobs, backend)  # the key's first use creates its item (one more write, once)
        jobs.enqueue_many([("export", {"n": n}) for n in range(bench.jobs)])
        units, calls = bench.count(lambda: _run_all(jobs, backend))
    return Row("concurrency-limited job, a slot free", "job", units, dict(calls))


def concurrency_limited_deferral(bench: Bench) -> Row:
    """A job whose slots are all held: the refused UpdateItem carries the holders."""
    with bench.app() as (jobs, backend, _):
        held = threading.Event()
        release = threading.Event()

        def hold(payload: Any) -> None:
            held.set()
            release.wait(60)

        jobs.job("export", concurrency_limit=1)(hold)
        jobs.enqueue("export", {"n": -1})
        consumer = jobs.consumer()
        [first] = backend.receive(max_messages=1, wait=timedelta(0))
        holder = threading.Thread(target=consumer.process, args=(first,))
        holder.start()
        held.wait(60)
        jobs.enqueue_many([("export", {"n": n}) for n in range(bench.jobs)])
        units, calls = bench.count(lambda: _run_all(jobs, backend))
        release.set()
        holder.join()
    return Row("concurrency-limited job, every slot held (deferred)", "deferral", units, dict(calls))


def both_limits_job(bench: Bench) -> Row:
    """A job under both limits: a slot, a start, the slot back."""
    with bench.app() as (jobs, backend, _):
        rate = RateLimit(100_000, timedelta(seconds=1))
        jobs.job("sync", rate_limit=rate, concurrency_limit=5, limit_key="tenant")(lambda payload: None)
        jobs.enqueue("sync", {"tenant": "acme"})
        _run_all(jobs, backend)
        jobs.enqueue_many([("sync", {"tenant": "acme", "n": n}) for n in range(bench.jobs)])
        units, calls = bench.count(lambda: _run_all(jobs, backend))
    return Row("job with both limits (per tenant), under them", "job", units, dict(calls))


MEASUREMENTS: list[Callable[[Bench], Row]] = [
    rate_limited_job,
    rate_limited_deferral,
    concurrency_limited_job,
    concurrency_limited_deferral,
    both_limits_job,
]
"""Every measurement, in the table's order."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--dynamodb", choices=("dynamodb-local", "moto"), default="dynamodb-local")
    parser.add_argument(
        "--limits-only", action="store_true", help="skip the unique-enqueue and result() rows"
    )
    arguments = parser.parse_args(argv)
    with LocalAwsServer() as server, contextlib.ExitStack() as stack:
        os.environ.update(local_environment(server.endpoint_url))
        endpoint = server.endpoint_url
        if arguments.dynamodb == "dynamodb-local":
            # The test suite's launcher (scripts/install-dynamodb-local installs the server).
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.dynamodb_local import DynamoDbLocal

            endpoint = stack.enter_context(DynamoDbLocal()).endpoint_url
        client: DynamoDBClient = boto3.session.Session().client("dynamodb", endpoint_url=endpoint)
        calls: Counter[str] = Counter()

        def count(model: Any, **_: Any) -> None:
            calls[model.name] += 1

        client.meta.events.register("before-call.dynamodb", count)
        bench = Bench(client, calls, arguments.jobs)
        rows = [measure(bench) for measure in MEASUREMENTS]
        client.close()
    print(f"\n{arguments.jobs} jobs per measurement, DynamoDB on {arguments.dynamodb}\n")
    print("| path | limits' requests | per | cancellation-marker reads | all calls |")
    print("|---|---|---|---|---|")
    for row in rows:
        operations = ", ".join(f"{name} {count}" for name, count in sorted(row.operations.items()))
        print(
            f"| {row.what} | {row.limit_requests:.2f} | {row.per} | {row.marker_reads:.2f} | {operations} |"
        )
    if arguments.limits_only:
        return 0
    # Unique enqueues and result() waits: the producer side, measured by its own module.
    print()
    return _run_module("limits_enqueue", ["--dynamodb", arguments.dynamodb])


def _run_module(name: str, argv: list[str]) -> int:
    """``main(argv)`` of a sibling benchmark module (bench/ is scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.main(argv))


if __name__ == "__main__":
    sys.exit(main())

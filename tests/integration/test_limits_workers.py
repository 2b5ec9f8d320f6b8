"""Rate and concurrency limits across ``cloudjobs worker`` processes (SQS on moto, the table on
DynamoDB Local, which serialises concurrent conditional writes as DynamoDB does).

The workers run ``tests.integration.limits_worker_app:jobs``; handlers append ``start``/``end``
events to a ledger file and the limits stage appends a ``granted`` event for each rate grant, so
every count below is taken from what the worker processes did, not from inside the test process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import boto3
import pytest

from cloudjobs import CloudJobs
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.provisioning import (
    QueueSpec,
    TableSpec,
    delete_queue,
    delete_table,
    provision_queue,
    provision_table,
)
from cloudjobs.settings import ENV_PREFIX, Settings
from tests.dynamodb_local import DynamoDbLocal
from tests.integration.limits_worker_app import CONCURRENCY, CONCURRENCY_JOB, RATE, RATE_JOB, TENANT_JOB
from tests.integration.worker_app import LEDGER_VARIABLE, Event, read_ledger
from tests.queue_depths import queue_depths

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

BURST: Final = RATE
"""The burst of ``"20/s"``: a rate limit's default burst is its count (docs/limits.md)."""
LEASE_SECONDS: Final = 4
"""The visibility timeout, and so the concurrency lease (heartbeat every third)."""
CLOCK_SKEW_SECONDS: Final = 2
_REPOSITORY_ROOT: Final = Path(__file__).resolve().parents[2]
_COMMAND: Final = (
    str(Path(sys.executable).parent / "cloudjobs"),
    "worker",
    "tests.integration.limits_worker_app:jobs",
)


@dataclass(frozen=True, slots=True)
class Resources:
    queue_url: str
    dlq_url: str
    table: str


@pytest.fixture
def make_resources(
    aws_environment: dict[str, str], dynamodb_local: DynamoDbLocal, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[int], Resources]]:
    """A queue with the given visibility timeout (the concurrency lease) and a table; deleted after."""
    # The workers inherit the variable: their limits (and the table) live in DynamoDB Local.
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint_url)
    sqs: SQSClient = boto3.session.Session().client("sqs")
    dynamodb: DynamoDBClient = boto3.session.Session().client("dynamodb")
    made: list[tuple[QueueSpec, TableSpec]] = []

    def make(visibility_timeout_seconds: int) -> Resources:
        queue_spec = QueueSpec(
            f"limits-{uuid.uuid4().hex[:12]}", visibility_timeout_seconds=visibility_timeout_seconds
        )
        table_spec = TableSpec(f"limits-{uuid.uuid4().hex[:12]}")
        queue = provision_queue(queue_spec, client=sqs)
        provision_table(table_spec, client=dynamodb)
        made.append((queue_spec, table_spec))
        return Resources(queue.queue_url, queue.dlq_url, table_spec.name)

    yield make
    for queue_spec, table_spec in made:
        delete_queue(queue_spec, client=sqs)
        delete_table(table_spec, client=dynamodb)
    sqs.close()
    dynamodb.close()


class Workers:
    """The worker processes of a test: started, killed and stopped."""

    def __init__(self, environment: dict[str, str], log_directory: Path) -> None:
        self._environment = environment
        self._log_directory = log_directory
        self.all: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        with (self._log_directory / f"worker-{len(self.all)}.stderr").open("wb") as stderr:
            process = subprocess.Popen(
                _COMMAND,
                cwd=_REPOSITORY_ROOT,
                env=self._environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.all.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.all:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.all:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def wait_started(self) -> None:
        """Wait until every worker started has logged that it runs (imports and set-up are slow
        on a loaded machine; the timing windows start after them)."""

        def started() -> bool:
            logs = sorted(self._log_directory.glob("worker-*.stderr"))
            return len(logs) == len(self.all) and all("worker started" in log.read_text() for log in logs)

        _poll(started, seconds=60, what="worker start", workers=self)

    def errors(self) -> list[str]:
        return [
            line
            for log in sorted(self._log_directory.glob("worker-*.stderr"))
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
            if '"level": "error"' in line or "Traceback" in line
        ]


def _environment(resources: Resources, aws_environment: dict[str, str], ledger: Path) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    environment.update(aws_environment)
    environment.update(
        {
            LEDGER_VARIABLE: str(ledger),
            "CLOUDJOBS_QUEUE_URL": resources.queue_url,
            "CLOUDJOBS_IDEMPOTENCY_TABLE": resources.table,
            "CLOUDJOBS_WAIT_TIME_SECONDS": "1",
            "CLOUDJOBS_SHUTDOWN_TIMEOUT_SECONDS": "10",
            "CLOUDJOBS_CONCURRENCY": "8",
        }
    )
    return environment


def _producer(resources: Resources) -> CloudJobs:
    return CloudJobs(
        settings=Settings(_env_file=None, queue_url=resources.queue_url),
        backend=SqsBackend(queue_url=resources.queue_url),
    )


def _poll(condition: Callable[[], bool], *, seconds: float, what: str, workers: Workers) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {seconds}s; worker errors: {workers.errors()[-5:]}")
        time.sleep(0.1)


def _busiest_second(times: list[float]) -> int:
    """The most events in any window of one second."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, moment in enumerate(ordered):
        while ordered[first] <= moment - 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end at the moment another starts does not overlap)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = running = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def _runs(events: list[Event], *, killed: dict[int, float]) -> dict[str, list[tuple[float, float]]]:
    """Each job's runs as (start, end), a start paired with the next end of its job in its process;
    a run of a killed worker ends at the kill."""
    runs: dict[str, list[tuple[float, float]]] = {}
    open_runs: dict[tuple[str, int], float] = {}
    for event in sorted(events, key=lambda event: event.time):
        if event.event == "start":
            open_runs[(event.job, event.pid)] = event.time
        elif event.event == "end":
            start = open_runs.pop((event.job, event.pid))
            runs.setdefault(event.job, []).append((start, event.time))
    for (job, pid), start in open_runs.items():
        assert pid in killed, f"run of {job} in {pid} never ended"
        runs.setdefault(job, []).append((start, killed[pid]))
    return runs


def test_a_rate_limit_holds_across_three_worker_processes(
    make_resources: Callable[[int], Resources],
    aws_environment: dict[str, str],
    tmp_path: Path,
    sqs_client: SQSClient,
) -> None:
    # A visibility timeout well above any heartbeat delay on a loaded machine: no redelivery.
    resources = make_resources(30)
    ledger = tmp_path / "ledger.jsonl"
    jobs = 600
    workers = Workers(_environment(resources, aws_environment, ledger), tmp_path)
    try:
        for _ in range(3):
            workers.start()
        workers.wait_started()
        _producer(resources).enqueue_many([(RATE_JOB, {"id": f"send-{index:03d}"}) for index in range(jobs)])

        def all_started() -> bool:
            return len({event.job for event in read_ledger(ledger) if event.event == "start"}) >= jobs

        _poll(all_started, seconds=120, what="start of every job", workers=workers)
        _poll(
            lambda: queue_depths(sqs_client, resources.queue_url) == (0, 0, 0),
            seconds=30,
            what="every message acknowledged",
            workers=workers,
        )
    finally:
        workers.stop_all()

    events = read_ledger(ledger)
    starts = [event.time for event in events if event.event == "start"]
    grants = [event.time for event in events if event.event == "granted"]
    started = Counter(event.job for event in events if event.event == "start")
    assert len(started) == jobs
    assert max(started.values()) == 1  # none ran twice
    # A grant per start; a copy delivered twice (moto's concurrent receives can hand one message to
    # two workers) spends a start before its idempotency check acknowledges it unrun.
    assert len(grants) >= jobs
    assert _busiest_second(starts) <= RATE + BURST + 2
    assert _busiest_second(grants) <= RATE + BURST + 2
    elapsed = max(starts) - min(grants)
    assert 27 <= elapsed <= 40, elapsed
    assert queue_depths(sqs_client, resources.dlq_url) == (0, 0, 0)
    print(
        f"\nrate: {jobs} jobs in {elapsed:.1f}s, busiest second {_busiest_second(starts)} starts, "
        f"{_busiest_second(grants)} grants ({len(grants) - jobs} grants to copies delivered twice)"
    )


def test_a_concurrency_limit_holds_across_workers_and_a_killed_workers_slots_come_back(
    make_resources: Callable[[int], Resources],
    aws_environment: dict[str, str],
    tmp_path: Path,
    sqs_client: SQSClient,
) -> None:
    resources = make_resources(LEASE_SECONDS)
    ledger = tmp_path / "ledger.jsonl"
    jobs = 100
    seconds = 0.5
    _producer(resources).enqueue_many(
        [(CONCURRENCY_JOB, {"id": f"export-{index:03d}", "seconds": seconds}) for index in range(jobs)]
    )
    workers = Workers(_environment(resources, aws_environment, ledger), tmp_path)
    killed: dict[int, float] = {}
    try:
        live = [workers.start() for _ in range(3)]

        def running_in_a_worker() -> bool:
            events = read_ledger(ledger)
            ended = {(event.job, event.pid) for event in events if event.event == "end"}
            pids = {process.pid for process in live}
            return sum(1 for event in events if event.event == "end") >= 30 and any(
                event.event == "start" and (event.job, event.pid) not in ended and event.pid in pids
                for event in events[-4:]
            )

        _poll(running_in_a_worker, seconds=60, what="a third of the jobs done", workers=workers)
        events = read_ledger(ledger)
        ended = {(event.job, event.pid) for event in events if event.event == "end"}
        victim_pid = next(
            event.pid
            for event in reversed(events)
            if event.event == "start" and (event.job, event.pid) not in ended
        )
        victim = next(process for process in live if process.pid == victim_pid)
        victim.kill()  # SIGKILL while its job holds a slot: no release, no heartbeat
        killed[victim.pid] = time.time()
        victim.wait()

        def all_ended() -> bool:
            return len({event.job for event in read_ledger(ledger) if event.event == "end"}) >= jobs

        _poll(all_ended, seconds=150, what="end of every job", workers=workers)
    finally:
        workers.stop_all()

    events = read_ledger(ledger)
    runs = _runs(events, killed=killed)
    intervals = [run for job_runs in runs.values() for run in job_runs]
    assert len(runs) == jobs
    assert _most_at_once(intervals) <= CONCURRENCY
    # Once the killed worker's lease lapsed, its slot came back: two ran at once again.
    lapsed = next(iter(killed.values())) + LEASE_SECONDS + CLOCK_SKEW_SECONDS
    assert _most_at_once([(start, end) for start, end in intervals if start >= lapsed]) == CONCURRENCY
    assert queue_depths(sqs_client, resources.dlq_url) == (0, 0, 0)


def test_a_per_tenant_limit_runs_one_job_per_tenant_and_the_tenants_in_parallel(
    make_resources: Callable[[int], Resources],
    aws_environment: dict[str, str],
    tmp_path: Path,
    sqs_client: SQSClient,
) -> None:
    resources = make_resources(30)
    ledger = tmp_path / "ledger.jsonl"
    tenants = ("acme", "globex")
    per_tenant = 6
    _producer(resources).enqueue_many(
        [
            (TENANT_JOB, {"id": f"{index}", "tenant_id": tenant, "seconds": 0.4})
            for index in range(per_tenant)
            for tenant in tenants
        ]
    )
    workers = Workers(_environment(resources, aws_environment, ledger), tmp_path)
    try:
        workers.start()
        workers.start()

        def all_ended() -> bool:
            ended = {event.job for event in read_ledger(ledger) if event.event == "end"}
            return len(ended) >= per_tenant * len(tenants)

        _poll(all_ended, seconds=90, what="end of every job", workers=workers)
    finally:
        workers.stop_all()

    runs = _runs(read_ledger(ledger), killed={})
    by_tenant = {
        tenant: [run for job, job_runs in runs.items() if job.startswith(f"{tenant}/") for run in job_runs]
        for tenant in tenants
    }
    assert {tenant: len(tenant_runs) for tenant, tenant_runs in by_tenant.items()} == dict.fromkeys(
        tenants, per_tenant
    )
    assert all(_most_at_once(tenant_runs) == 1 for tenant_runs in by_tenant.values())
    assert _most_at_once(by_tenant["acme"] + by_tenant["globex"]) == 2  # the tenants ran side by side
    assert queue_depths(sqs_client, resources.dlq_url) == (0, 0, 0)

"""Several real ``cloudjobs scheduler`` processes on one 2-second schedule, over HTTP: SQS on the moto
server, the table on DynamoDB Local (moto does not serialise concurrent conditional writes).

Each test reads the queue back at the end: every tick from the first fired to the last must be
there exactly once (job ids are made of the tick), whatever processes were killed on the way. Waits
poll the schedule's record with deadlines; every process is killed and reaped when its test ends.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import boto3
import pytest

from cloudjobs.envelope import decode
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.provisioning import ProvisionedQueue, TableSpec, delete_table, provision_table
from cloudjobs.scheduling.state import ScheduleState
from cloudjobs.settings import ENV_PREFIX
from tests.dynamodb_local import DynamoDbLocal
from tests.integration.scheduler_app import HANG_VARIABLE, INTERVAL_SECONDS, SCHEDULE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient

T = TypeVar("T")

_REPOSITORY_ROOT: Final = Path(__file__).resolve().parents[2]
_CLAIM_LEASE_SECONDS: Final = 3
_TAKEOVER: Final = timedelta(seconds=_CLAIM_LEASE_SECONDS + 2 + 1)
"""The stated takeover time with this lease: lease + the 2 s clock-skew allowance + the 1 s poll."""
_COMMAND: Final = (
    str(Path(sys.executable).parent / "cloudjobs"),
    "scheduler",
    "tests.integration.scheduler_app:jobs",
    "--claim-lease",
    str(_CLAIM_LEASE_SECONDS),
    "--log-format",
    "text",
)
_STARTUP_SECONDS: Final = 20.0
_POLL_SECONDS: Final = 0.1
_INTERVAL: Final = timedelta(seconds=INTERVAL_SECONDS)


@dataclass(frozen=True, slots=True)
class SchedulerProcess:
    """A running ``cloudjobs scheduler`` and the file its stderr goes to."""

    process: subprocess.Popen[bytes]
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text()


@dataclass
class Stage:
    """The queue and table the schedulers of one test share, and how to start them."""

    queue: ProvisionedQueue
    store: DynamoDbIdempotencyStore
    environment: dict[str, str]
    directory: Path
    processes: list[SchedulerProcess]

    def spawn(self, **extra: str) -> SchedulerProcess:
        """Start one scheduler process (with ``extra`` environment variables)."""
        path = self.directory / f"scheduler-{len(self.processes)}.stderr"
        with path.open("wb") as stderr:
            process = subprocess.Popen(
                _COMMAND,
                cwd=_REPOSITORY_ROOT,
                env={**self.environment, **extra},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        started = SchedulerProcess(process, path)
        self.processes.append(started)
        return started

    def record(self) -> ScheduleState | None:
        return self.store.schedule_state(SCHEDULE)

    def wait_for_fires(self, count: int, *, after: datetime | None = None) -> ScheduleState:
        """Wait until ``count`` more ticks than ``after`` were fired; returns the record then."""

        def fired() -> ScheduleState | None:
            record = self.record()
            if record is None or record.last_fired_tick is None:
                return None
            if after is None:
                return record if count <= 1 else None
            return record if record.last_fired_tick >= after + count * _INTERVAL else None

        return self.wait(fired, what=f"{count} more fired ticks")

    def wait(self, condition: Callable[[], T | None], *, what: str, seconds: float = _STARTUP_SECONDS) -> T:
        deadline = time.monotonic() + seconds
        while True:
            value = condition()
            if value is not None:
                return value
            if time.monotonic() > deadline:
                logs = "\n".join(process.stderr()[-3000:] for process in self.processes)
                pytest.fail(f"no {what} within {seconds}s; scheduler logs:\n{logs}")
            time.sleep(_POLL_SECONDS)

    def process_of(self, owner: str) -> SchedulerProcess:
        """The process that wrote ``owner`` (``host:pid``) into the record."""
        pid = int(owner.rsplit(":", 1)[1])
        return next(process for process in self.processes if process.process.pid == pid)

    def stop_all(self) -> None:
        """SIGTERM every live scheduler; each must exit cleanly within a few seconds."""
        live = [process for process in self.processes if process.process.poll() is None]
        for process in live:
            process.process.send_signal(signal.SIGTERM)
        for process in live:
            assert process.process.wait(timeout=10) == 0, process.stderr()


@pytest.fixture
def stage(
    make_queue: Callable[..., ProvisionedQueue],
    aws_environment: dict[str, str],
    dynamodb_local: DynamoDbLocal,
    tmp_path: Path,
) -> Iterator[Stage]:
    queue = make_queue()
    client: DynamoDBClient = boto3.session.Session().client(
        "dynamodb", endpoint_url=dynamodb_local.endpoint_url
    )
    table = TableSpec(f"test-{uuid.uuid4().hex[:16]}")
    provision_table(table, client=client)
    environment = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    environment.update(aws_environment)
    environment["AWS_ENDPOINT_URL_DYNAMODB"] = dynamodb_local.endpoint_url
    environment["CLOUDJOBS_QUEUE_URL"] = queue.queue_url
    environment["CLOUDJOBS_IDEMPOTENCY_TABLE"] = table.name
    stage = Stage(queue, DynamoDbIdempotencyStore(table.name, client=client), environment, tmp_path, [])
    yield stage
    for process in stage.processes:
        if process.process.poll() is None:
            process.process.kill()
        process.process.wait()
    delete_table(table, client=client)
    client.close()


def queued_jobs(client: SQSClient, queue_url: str) -> list[tuple[str, datetime]]:
    """Every message in the queue as (job id, enqueued at): receives until three come back empty."""
    found: list[tuple[str, datetime]] = []
    empty = 0
    while empty < 3:
        response = client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=600
        )
        messages = response.get("Messages", [])
        empty = 0 if messages else empty + 1
        for message in messages:
            envelope = decode(message["Body"])
            found.append((envelope.id, envelope.enqueued_at))
    return found


def tick_of(job_id: str) -> datetime:
    """The tick a fire's job id names (``schedule:beat@2026-...Z``)."""
    return datetime.strptime(job_id.rsplit("@", 1)[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def assert_each_tick_fired_once(jobs: list[tuple[str, datetime]]) -> list[datetime]:
    """Every tick between the first and the last fired is in the queue exactly once; returns them."""
    counts = Counter(job_id for job_id, _ in jobs)
    duplicates = {job_id: count for job_id, count in counts.items() if count > 1}
    assert not duplicates, f"ticks fired more than once: {duplicates}"
    ticks = sorted(tick_of(job_id) for job_id in counts)
    expected = [ticks[0] + index * _INTERVAL for index in range(len(ticks))]
    assert ticks == expected, f"ticks missing: {sorted(set(expected) - set(ticks))}"
    return ticks


def test_two_schedulers_fire_each_tick_once_and_one_killed_mid_tick_is_taken_over_in_time(
    stage: Stage, sqs_client: SQSClient
) -> None:
    hang_file = stage.directory / "hung-tick"
    hung = stage.spawn(**{HANG_VARIABLE: str(hang_file)})
    hung_job = stage.wait(
        lambda: hang_file.read_text() or None if hang_file.exists() else None, what="a hung fire"
    )
    stage.spawn()
    stage.spawn()
    hung.process.send_signal(signal.SIGKILL)  # mid-tick: it holds the claim and sent nothing
    hung.process.wait(timeout=10)
    taken_over = stage.wait(
        lambda: record if (record := stage.record()) and record.last_fired_tick is not None else None,
        what="the hung tick fired by another scheduler",
    )
    stage.wait_for_fires(3, after=taken_over.last_fired_tick)
    stage.stop_all()

    jobs = queued_jobs(sqs_client, stage.queue.queue_url)

    ticks = assert_each_tick_fired_once(jobs)
    assert ticks[0] == tick_of(hung_job)
    assert len(ticks) >= 4
    enqueued = dict(jobs)[hung_job]
    assert enqueued - tick_of(hung_job) <= _TAKEOVER + timedelta(seconds=2)


@pytest.mark.slow
def test_two_then_three_schedulers_fire_each_tick_once_for_a_minute_with_the_last_firer_killed(
    stage: Stage, sqs_client: SQSClient
) -> None:
    stage.spawn()
    stage.spawn()
    first = stage.wait_for_fires(1)
    assert first.last_fired_tick is not None
    second_phase = stage.wait_for_fires(10, after=first.last_fired_tick)
    stage.spawn()
    assert second_phase.last_fired_tick is not None
    before_kill = stage.wait_for_fires(10, after=second_phase.last_fired_tick)
    assert before_kill.last_fired_tick is not None
    # Kill the process that fired the latest tick, right after it settled it.
    victim = stage.process_of(before_kill.owner)
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=10)
    stage.wait_for_fires(10, after=before_kill.last_fired_tick)
    survivors = [process for process in stage.processes if process.process.poll() is None]
    stage.stop_all()

    ticks = assert_each_tick_fired_once(queued_jobs(sqs_client, stage.queue.queue_url))

    assert len(ticks) >= 31
    assert len(survivors) == 2
    assert victim not in survivors

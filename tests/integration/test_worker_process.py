"""The real ``cloudjobs worker`` command, run as a subprocess against the moto server.

Each test starts ``cloudjobs worker tests.integration.worker_app:jobs`` from the repository root with
the moto environment, a fresh queue and small timings, and watches it from outside: the app's handlers
append ``start``/``end`` events to a ledger file, and the queue is read with a plain boto3 client.
Every wait polls with a deadline; every worker process is killed and reaped when its test ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

import pytest

from cloudjobs import CloudJobs
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.envelope import decode
from cloudjobs.provisioning import ProvisionedQueue
from cloudjobs.settings import ENV_PREFIX, Settings
from tests.integration.worker_app import GATED_JOB, LEDGER_VARIABLE, WORK_JOB

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

pytestmark = pytest.mark.slow

MakeQueue = Callable[..., ProvisionedQueue]
MakeBackend = Callable[..., SqsBackend]
T = TypeVar("T")

_REPOSITORY_ROOT: Final = Path(__file__).resolve().parents[2]
_COMMAND: Final = (
    str(Path(sys.executable).parent / "cloudjobs"),
    "worker",
    "tests.integration.worker_app:jobs",
)
_POLL_SECONDS: Final = 0.05
_STARTUP_SECONDS: Final = 20.0
"""How long a worker may take to import, reach the queue and start its first jobs."""
_SHUTDOWN_TIMEOUT_SECONDS: Final = 10.0
_EXIT_MARGIN_SECONDS: Final = 3.0
"""Slack past a deadline for the interpreter to exit (and the test to notice)."""


# -- the ledger -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """One line of the ledger: a handler in process ``pid`` started or ended ``job`` at ``time``."""

    event: str
    job: str
    pid: int
    time: float


class Ledger:
    """The events the worker app's handlers append, read back from the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[LedgerEvent]:
        """Every complete line written so far, in order."""
        if not self.path.exists():
            return []
        lines = self.path.read_text().splitlines(keepends=True)
        return [LedgerEvent(**json.loads(line)) for line in lines if line.endswith("\n")]

    def starts(self) -> list[LedgerEvent]:
        """The ``start`` events so far."""
        return [event for event in self.events() if event.event == "start"]

    def ends(self) -> list[LedgerEvent]:
        """The ``end`` events so far."""
        return [event for event in self.events() if event.event == "end"]


# -- worker processes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerProcess:
    """A running ``cloudjobs worker`` and the file its stderr goes to."""

    process: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def pid(self) -> int:
        """The worker's process id (as its handlers write it in the ledger)."""
        return self.process.pid

    def stderr(self) -> str:
        """Everything the worker wrote to stderr so far (its logs, or its error)."""
        return self.stderr_path.read_text()

    def wait(self, timeout: float) -> int:
        """Wait for the worker to exit; returns its exit code, fails the test if it takes too long."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} still running after {timeout}s; stderr:\n{self.stderr()}")


class SpawnWorker(Protocol):
    """What the ``spawn_worker`` fixture returns."""

    def __call__(self, queue_url: str | None, settings: Mapping[str, str] | None = None) -> WorkerProcess: ...


Enqueue = Callable[[ProvisionedQueue, Sequence[tuple[str, dict[str, object]]]], None]


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    """An empty ledger in this test's directory."""
    return Ledger(tmp_path / "ledger.jsonl")


@pytest.fixture
def spawn_worker(aws_environment: dict[str, str], ledger: Ledger, tmp_path: Path) -> Iterator[SpawnWorker]:
    """Start ``cloudjobs worker`` subprocesses; any still running at the end is killed and reaped.

    Call it as ``spawn_worker(queue_url, {"CLOUDJOBS_CONCURRENCY": "2"})``: the worker gets this
    process's environment without its ``CLOUDJOBS_*`` variables, the moto environment, the ledger,
    a 1-second long poll, a 10-second shutdown deadline, then the given settings.
    """
    workers: list[WorkerProcess] = []

    def spawn(queue_url: str | None, settings: Mapping[str, str] | None = None) -> WorkerProcess:
        environment = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
        environment.update(aws_environment)
        environment[LEDGER_VARIABLE] = str(ledger.path)
        environment["CLOUDJOBS_WAIT_TIME_SECONDS"] = "1"
        environment["CLOUDJOBS_SHUTDOWN_TIMEOUT_SECONDS"] = str(_SHUTDOWN_TIMEOUT_SECONDS)
        if queue_url is not None:
            environment["CLOUDJOBS_QUEUE_URL"] = queue_url
        environment.update(settings or {})
        stderr_path = tmp_path / f"worker-{len(workers)}.stderr"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                _COMMAND,
                cwd=_REPOSITORY_ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        worker = WorkerProcess(process, stderr_path)
        workers.append(worker)
        return worker

    yield spawn
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait()


# -- the queue --------------------------------------------------------------------------------------


@pytest.fixture
def enqueue(make_backend: MakeBackend) -> Enqueue:
    """Enqueue ``(job type, payload)`` pairs on a queue, as a producer would."""

    def send(queue: ProvisionedQueue, jobs: Sequence[tuple[str, dict[str, object]]]) -> None:
        producer = CloudJobs(
            settings=Settings(_env_file=None, queue_url=queue.queue_url),
            backend=make_backend(queue_url=queue.queue_url),
        )
        producer.enqueue_many(jobs)

    return send


@dataclass(frozen=True, slots=True)
class Received:
    """A message received from the queue: its job's payload id and how often it was received."""

    job: str
    receive_count: int


def _receive(client: SQSClient, queue_url: str, *, expected: int, seconds: float) -> list[Received]:
    """Receive until ``expected`` messages arrived or ``seconds`` passed; returns what arrived."""
    deadline = time.monotonic() + seconds
    received: list[Received] = []
    while len(received) < expected and time.monotonic() < deadline:
        response = client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        for message in response.get("Messages", []):
            payload = decode(message["Body"]).payload
            assert isinstance(payload, dict)
            count = int(message.get("Attributes", {})["ApproximateReceiveCount"])
            received.append(Received(job=str(payload["id"]), receive_count=count))
    return received


def _message_counts(client: SQSClient, queue_url: str) -> tuple[int, int]:
    """The queue's (visible, in flight) message counts."""
    attributes = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def _wait_for(condition: Callable[[], T | None], *, seconds: float, what: str, worker: WorkerProcess) -> T:
    """Poll ``condition`` until it returns a value; fail naming ``what`` (with the worker's stderr)."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if worker.process.poll() is not None:
            pytest.fail(f"worker exited ({worker.process.returncode}) before {what}:\n{worker.stderr()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {seconds}s; worker stderr:\n{worker.stderr()}")
        time.sleep(_POLL_SECONDS)


# -- SIGTERM ----------------------------------------------------------------------------------------


def test_sigterm_finishes_running_jobs_releases_the_rest_and_exits_cleanly(
    make_queue: MakeQueue,
    sqs_client: SQSClient,
    enqueue: Enqueue,
    spawn_worker: SpawnWorker,
    ledger: Ledger,
) -> None:
    # A long visibility timeout: a message the worker held is visible again in the next seconds only
    # if the worker released it.
    queue = make_queue(visibility_timeout_seconds=60)
    jobs = [f"job-{index}" for index in range(8)]
    enqueue(queue, [(WORK_JOB, {"id": job, "seconds": 2.0}) for job in jobs])
    concurrency, prefetch = 2, 4
    worker = spawn_worker(
        queue.queue_url, {"CLOUDJOBS_CONCURRENCY": str(concurrency), "CLOUDJOBS_PREFETCH": str(prefetch)}
    )

    def all_slots_busy() -> list[LedgerEvent] | None:
        starts = ledger.starts()
        return starts if len(starts) >= concurrency else None

    running = _wait_for(
        all_slots_busy,
        seconds=_STARTUP_SECONDS,
        what=f"{concurrency} jobs started",
        worker=worker,
    )
    signalled_at, signalled_monotonic = time.time(), time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    code = worker.wait(_SHUTDOWN_TIMEOUT_SECONDS + _EXIT_MARGIN_SECONDS)
    exit_seconds = time.monotonic() - signalled_monotonic

    assert code == 0, worker.stderr()
    assert exit_seconds < _SHUTDOWN_TIMEOUT_SECONDS + _EXIT_MARGIN_SECONDS
    in_flight = {event.job for event in running}
    assert len(in_flight) == concurrency
    assert [event for event in ledger.starts() if event.time >= signalled_at] == []
    assert {event.job for event in ledger.starts()} == in_flight
    ends = ledger.ends()
    assert {event.job for event in ends} == in_flight
    assert all(event.time > signalled_at for event in ends), "the in-flight jobs ended after the signal"

    remaining = _receive(sqs_client, queue.queue_url, expected=len(jobs) - len(in_flight), seconds=5)
    assert sorted([*in_flight, *(message.job for message in remaining)]) == sorted(jobs)
    # Messages received by the worker before (and now visible despite the 60 s timeout) were released.
    released = [message for message in remaining if message.receive_count > 1]
    assert 1 <= len(released) <= prefetch
    assert _message_counts(sqs_client, queue.dlq_url) == (0, 0)


# -- SIGKILL ----------------------------------------------------------------------------------------


def test_job_of_a_killed_worker_runs_again_after_the_visibility_timeout(
    make_queue: MakeQueue,
    sqs_client: SQSClient,
    enqueue: Enqueue,
    spawn_worker: SpawnWorker,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    visibility_timeout_seconds = 3
    tolerance_seconds = 0.5
    queue = make_queue(visibility_timeout_seconds=visibility_timeout_seconds)
    release = tmp_path / "release"
    enqueue(queue, [(GATED_JOB, {"id": "gated", "release_file": str(release), "max_seconds": 30.0})])
    single = {"CLOUDJOBS_CONCURRENCY": "1", "CLOUDJOBS_PREFETCH": "0"}

    first = spawn_worker(queue.queue_url, single)
    _wait_for(ledger.starts, seconds=_STARTUP_SECONDS, what="the job started", worker=first)
    first.process.kill()
    assert first.wait(_EXIT_MARGIN_SECONDS) == -signal.SIGKILL
    release.touch()
    second = spawn_worker(queue.queue_url, single)
    _wait_for(
        lambda: [event for event in ledger.ends() if event.pid == second.pid],
        seconds=_STARTUP_SECONDS + visibility_timeout_seconds,
        what="the job ended in the second worker",
        worker=second,
    )
    second.process.send_signal(signal.SIGTERM)
    assert second.wait(_SHUTDOWN_TIMEOUT_SECONDS + _EXIT_MARGIN_SECONDS) == 0, second.stderr()

    starts = ledger.starts()
    assert [event.pid for event in starts] == [first.pid, second.pid]
    assert starts[1].time >= starts[0].time + visibility_timeout_seconds - tolerance_seconds
    assert [event.pid for event in ledger.ends()] == [second.pid]
    assert _message_counts(sqs_client, queue.queue_url) == (0, 0)
    assert _message_counts(sqs_client, queue.dlq_url) == (0, 0)


# -- misconfiguration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("has_queue", "settings", "named"),
    [
        pytest.param(False, {}, "CLOUDJOBS_QUEUE_URL", id="no-queue"),
        pytest.param(
            True,
            {"CLOUDJOBS_HEARTBEAT_INTERVAL_SECONDS": "2"},
            "CLOUDJOBS_HEARTBEAT_INTERVAL_SECONDS",
            id="heartbeat-beyond-half-the-visibility",
        ),
        pytest.param(True, {"CLOUDJOBS_CONCURRENCY": "0"}, "CLOUDJOBS_CONCURRENCY", id="no-concurrency"),
    ],
)
def test_misconfigured_worker_exits_with_one_line_naming_the_setting(
    make_queue: MakeQueue,
    spawn_worker: SpawnWorker,
    has_queue: bool,
    settings: dict[str, str],
    named: str,
) -> None:
    queue_url = make_queue(visibility_timeout_seconds=3).queue_url if has_queue else None

    worker = spawn_worker(queue_url, settings)
    code = worker.wait(_STARTUP_SECONDS)

    stderr = worker.stderr()
    assert code == 2, stderr
    assert "Traceback" not in stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith("cloudjobs: configuration error:")
    assert named in line

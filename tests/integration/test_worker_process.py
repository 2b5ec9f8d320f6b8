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
import urllib.error
import urllib.request
import uuid
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

    def __call__(
        self,
        queue_url: str | None,
        settings: Mapping[str, str] | None = None,
        arguments: Sequence[str] = (),
    ) -> WorkerProcess: ...


Enqueue = Callable[[ProvisionedQueue, Sequence[tuple[str, dict[str, object]]]], None]


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    """An empty ledger in this test's directory."""
    return Ledger(tmp_path / "ledger.jsonl")


@pytest.fixture
def spawn_worker(aws_environment: dict[str, str], ledger: Ledger, tmp_path: Path) -> Iterator[SpawnWorker]:
    """Start ``cloudjobs worker`` subprocesses; any still running at the end is killed and reaped.

    Call it as ``spawn_worker(queue_url, {"CLOUDJOBS_CONCURRENCY": "2"}, ["--health-port", "0"])``:
    the worker gets this process's environment without its ``CLOUDJOBS_*`` variables, the moto
    environment, the ledger, a 1-second long poll, a 10-second shutdown deadline, then the given
    settings; the arguments follow the command's.
    """
    workers: list[WorkerProcess] = []

    def spawn(
        queue_url: str | None, settings: Mapping[str, str] | None = None, arguments: Sequence[str] = ()
    ) -> WorkerProcess:
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
                [*_COMMAND, *arguments],
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


def _log_records(worker: WorkerProcess) -> list[dict[str, object]]:
    """The worker's JSON log lines so far (complete lines only)."""
    lines = worker.stderr().splitlines(keepends=True)
    return [json.loads(line) for line in lines if line.endswith("\n") and line.startswith("{")]


def _logged(worker: WorkerProcess, fragment: str) -> dict[str, object] | None:
    """The first log record whose message contains ``fragment``, if any yet."""
    return next((record for record in _log_records(worker) if fragment in str(record["message"])), None)


def _wait_for_log(worker: WorkerProcess, fragment: str) -> dict[str, object]:
    """Wait until the worker logs a record whose message contains ``fragment``; returns it."""
    return _wait_for(
        lambda: _logged(worker, fragment), seconds=_STARTUP_SECONDS, what=f"a log {fragment!r}", worker=worker
    )


def _health(port: int) -> tuple[int, dict[str, object]]:
    """GET /healthz on 127.0.0.1: the status code and the JSON body."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _wait_for_health(port: int, status: int, worker: WorkerProcess) -> dict[str, object]:
    """Poll /healthz until it answers ``status``; returns that answer's body."""

    def answered() -> dict[str, object] | None:
        code, body = _health(port)
        return body if code == status else None

    return _wait_for(answered, seconds=_STARTUP_SECONDS, what=f"a {status} from /healthz", worker=worker)


def _health_port(worker: WorkerProcess) -> int:
    """The port the worker's health endpoint listens on, read from its start-up log."""
    record = _wait_for_log(worker, "serving health checks on")
    return int(str(record["message"]).rsplit(":", 1)[1].split("/", 1)[0])


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


def test_sigterm_on_a_worker_of_two_queues_releases_the_unstarted_messages_of_both(
    make_queue: MakeQueue,
    sqs_client: SQSClient,
    enqueue: Enqueue,
    spawn_worker: SpawnWorker,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    # Visibility 60 s: within the test, a message the worker held is visible again only if released.
    default, bulk = make_queue(visibility_timeout_seconds=60), make_queue(visibility_timeout_seconds=60)
    release = tmp_path / "release"
    jobs = {
        queue.queue_url: [f"{name}-{index}" for index in range(3)]
        for name, queue in (("default", default), ("bulk", bulk))
    }
    for queue in (default, bulk):
        gated = {"release_file": str(release), "max_seconds": 30.0}
        enqueue(queue, [(GATED_JOB, {"id": job, **gated}) for job in jobs[queue.queue_url]])
    # One handler; each queue holds its one slot plus a prefetch of two: all six are held.
    worker = spawn_worker(
        default.queue_url,
        {
            "CLOUDJOBS_QUEUES": f"bulk={bulk.queue_url}",
            "CLOUDJOBS_CONCURRENCY": "1",
            "CLOUDJOBS_PREFETCH": "2",
        },
        ["--queue", "default", "--queue", "bulk"],
    )

    def all_held() -> list[LedgerEvent] | None:
        starts = ledger.starts()
        held = (
            _message_counts(sqs_client, default.queue_url)[1] + _message_counts(sqs_client, bulk.queue_url)[1]
        )
        return starts if len(starts) == 1 and held == 6 else None

    [running] = _wait_for(all_held, seconds=_STARTUP_SECONDS, what="all six held", worker=worker)
    worker.process.send_signal(signal.SIGTERM)
    _wait_for_log(worker, "worker stopping")
    release.touch()
    code = worker.wait(_SHUTDOWN_TIMEOUT_SECONDS + _EXIT_MARGIN_SECONDS)

    assert code == 0, worker.stderr()
    assert [event.job for event in ledger.starts()] == [running.job]
    for queue in (default, bulk):
        unstarted = sorted(set(jobs[queue.queue_url]) - {running.job})
        released = _receive(sqs_client, queue.queue_url, expected=len(unstarted), seconds=5)
        assert sorted(message.job for message in released) == unstarted
        assert all(message.receive_count == 2 for message in released)


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


def test_worker_on_a_queue_without_a_dead_letter_queue_refuses_to_start_naming_both_fixes(
    sqs_client: SQSClient, spawn_worker: SpawnWorker
) -> None:
    # No redrive policy and no CLOUDJOBS_DLQ_URL: a PermanentError would be received forever.
    queue_url = sqs_client.create_queue(QueueName=f"test-{uuid.uuid4().hex[:16]}")["QueueUrl"]
    try:
        worker = spawn_worker(queue_url)
        code = worker.wait(_STARTUP_SECONDS)
    finally:
        sqs_client.delete_queue(QueueUrl=queue_url)

    stderr = worker.stderr()
    assert code == 2, stderr
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.strip().splitlines() if not line.startswith("{")]
    assert line.startswith("cloudjobs: configuration error:")
    assert "redrive policy" in line
    assert "CLOUDJOBS_DLQ_URL" in line


# -- shutdown promises ------------------------------------------------------------------------------

_SLOW_RETRIES: Final = {"CLOUDJOBS_BACKOFF_BASE_SECONDS": "60", "CLOUDJOBS_BACKOFF_CAP_SECONDS": "60"}
"""A failed attempt's retry waits a minute: each test sees one attempt."""
_NEVER_RELEASED: Final = "/nonexistent/never-released"
"""A gated job's release file that never appears: the job runs until its ``max_seconds``."""
_IDLE_EXIT_SECONDS: Final = 5.0
"""The promise: an idle worker exits this soon after SIGTERM, whatever its long-poll wait."""


def test_sigterm_on_an_idle_worker_exits_within_five_seconds_despite_a_20_second_long_poll(
    make_queue: MakeQueue, spawn_worker: SpawnWorker
) -> None:
    queue = make_queue()
    worker = spawn_worker(queue.queue_url, {"CLOUDJOBS_WAIT_TIME_SECONDS": "20"})
    _wait_for_log(worker, "worker started")

    signalled = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    code = worker.wait(_SHUTDOWN_TIMEOUT_SECONDS + _EXIT_MARGIN_SECONDS)
    elapsed = time.monotonic() - signalled

    assert code == 0, worker.stderr()
    assert elapsed < _IDLE_EXIT_SECONDS, f"exited {elapsed:.1f}s after SIGTERM"


def test_at_the_shutdown_deadline_unstarted_messages_are_released_and_the_exit_says_how_many_ran_on(
    make_queue: MakeQueue, enqueue: Enqueue, spawn_worker: SpawnWorker, ledger: Ledger, sqs_client: SQSClient
) -> None:
    concurrency, prefetch = 2, 4
    jobs = [f"job-{index}" for index in range(concurrency + prefetch)]
    # Visibility 60 s: within the test, a message the worker held is visible again only if released.
    queue = make_queue(visibility_timeout_seconds=60)
    # One poll takes all six (the worker holds concurrency + prefetch); two start and never end.
    enqueue(
        queue,
        [(GATED_JOB, {"id": job, "release_file": _NEVER_RELEASED, "max_seconds": 60.0}) for job in jobs],
    )
    worker = spawn_worker(
        queue.queue_url,
        {
            "CLOUDJOBS_CONCURRENCY": str(concurrency),
            "CLOUDJOBS_PREFETCH": str(prefetch),
            "CLOUDJOBS_SHUTDOWN_TIMEOUT_SECONDS": "2",
        },
    )

    def held() -> list[LedgerEvent] | None:
        starts = ledger.starts()
        counts = _message_counts(sqs_client, queue.queue_url)
        return starts if len(starts) == concurrency and counts == (0, len(jobs)) else None

    running = {
        event.job for event in _wait_for(held, seconds=_STARTUP_SECONDS, what="all held", worker=worker)
    }

    worker.process.send_signal(signal.SIGTERM)
    code = worker.wait(2 + _EXIT_MARGIN_SECONDS + _IDLE_EXIT_SECONDS)

    stderr = worker.stderr()
    assert code == 1, stderr
    assert f"cloudjobs: {concurrency} jobs were still running at the shutdown deadline" in stderr
    assert {event.job for event in ledger.starts()} == running
    released = _receive(sqs_client, queue.queue_url, expected=prefetch, seconds=5)
    assert sorted(message.job for message in released) == sorted(set(jobs) - running)
    assert all(message.receive_count == 2 for message in released)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_forces_the_exit_with_128_plus_its_number(
    make_queue: MakeQueue,
    sqs_client: SQSClient,
    enqueue: Enqueue,
    spawn_worker: SpawnWorker,
    ledger: Ledger,
    second: signal.Signals,
) -> None:
    queue = make_queue(visibility_timeout_seconds=60)
    enqueue(queue, [(GATED_JOB, {"id": "blocker", "release_file": _NEVER_RELEASED, "max_seconds": 60.0})])
    enqueue(queue, [(WORK_JOB, {"id": "waiting", "seconds": 0.1})])
    # One slot, a 30 s shutdown deadline: only the second signal can end the wait early.
    worker = spawn_worker(
        queue.queue_url,
        {"CLOUDJOBS_CONCURRENCY": "1", "CLOUDJOBS_PREFETCH": "1", "CLOUDJOBS_SHUTDOWN_TIMEOUT_SECONDS": "30"},
    )
    _wait_for(ledger.starts, seconds=_STARTUP_SECONDS, what="the blocking job started", worker=worker)
    worker.process.send_signal(signal.SIGTERM)
    _wait_for_log(worker, "worker stopping")

    forced = time.monotonic()
    worker.process.send_signal(second)
    code = worker.wait(_IDLE_EXIT_SECONDS + _EXIT_MARGIN_SECONDS)

    assert code == 128 + second, worker.stderr()
    assert time.monotonic() - forced < _IDLE_EXIT_SECONDS
    assert _logged(worker, "1 jobs were still running"), worker.stderr()
    [released] = _receive(sqs_client, queue.queue_url, expected=1, seconds=5)
    assert released.job == "waiting", "the unstarted message was released; the running one stays hidden"


# -- health -----------------------------------------------------------------------------------------


def test_health_endpoint_says_503_while_every_slot_is_held_by_a_timed_out_handler(
    make_queue: MakeQueue,
    enqueue: Enqueue,
    spawn_worker: SpawnWorker,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    queue = make_queue(visibility_timeout_seconds=30)
    release = tmp_path / "release"
    enqueue(queue, [(GATED_JOB, {"id": "stuck", "release_file": str(release), "max_seconds": 60.0})])
    worker = spawn_worker(
        queue.queue_url,
        {"CLOUDJOBS_CONCURRENCY": "1", "CLOUDJOBS_JOB_TIMEOUT_SECONDS": "1"},
        ["--health-port", "0"],
    )
    worker_with_port = _health_port(worker)
    assert _health(worker_with_port)[0] == 200

    body = _wait_for_health(worker_with_port, 503, worker)
    assert body["stalls"] == ["handlers_overdue"]
    assert body["overdue_handlers"] == 1
    # Logged by the heartbeat's next tick; the endpoint judges on each request.
    stalled = _wait_for_log(worker, "worker stalled")
    assert stalled["level"] == "error"

    release.touch()
    _wait_for_health(worker_with_port, 200, worker)
    _wait_for_log(worker, "worker recovered")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait(_SHUTDOWN_TIMEOUT_SECONDS + _EXIT_MARGIN_SECONDS) == 0, worker.stderr()


def test_health_endpoint_says_503_when_the_receive_loop_completes_no_poll_for_the_stall_timeout(
    sqs_client: SQSClient, spawn_worker: SpawnWorker
) -> None:
    # A queue deleted under a running worker: every poll fails from then on.
    queue_url = sqs_client.create_queue(QueueName=f"test-{uuid.uuid4().hex[:16]}")["QueueUrl"]
    dlq_url = sqs_client.create_queue(QueueName=f"test-{uuid.uuid4().hex[:16]}")["QueueUrl"]
    try:
        worker = spawn_worker(
            queue_url, {"CLOUDJOBS_DLQ_URL": dlq_url}, ["--health-port", "0", "--stall-timeout", "3"]
        )
        port = _health_port(worker)
        assert _health(port)[0] == 200
        sqs_client.delete_queue(QueueUrl=queue_url)
        body = _wait_for_health(port, 503, worker)
        stalled = _wait_for_log(worker, "worker stalled")
    finally:
        sqs_client.delete_queue(QueueUrl=dlq_url)
    queue_name = queue_url.rsplit("/", 1)[1]
    assert body["stalls"] == ["receiver_stalled"]
    assert body["stalled_queues"] == [queue_name]
    assert float(str(body["seconds_since_poll"])) > 3
    assert stalled["level"] == "error"
    assert f"no poll of {queue_name} completed" in str(stalled["message"])


# -- logs -------------------------------------------------------------------------------------------


@pytest.fixture
def fine_and_failing(make_queue: MakeQueue, enqueue: Enqueue) -> str:
    """A queue holding a job that completes and one whose attempt fails; returns its URL."""
    queue = make_queue()
    enqueue(queue, [(WORK_JOB, {"id": "fine", "seconds": 0.0})])
    # A gate that never opens, given 0 s: the attempt fails at once (its retry waits a minute).
    enqueue(queue, [(GATED_JOB, {"id": "failing", "release_file": _NEVER_RELEASED, "max_seconds": 0.0})])
    return queue.queue_url


def test_json_logs_carry_each_failed_attempt_and_each_completion_with_the_job_fields(
    fine_and_failing: str, spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker(fine_and_failing, _SLOW_RETRIES)

    def both_logged() -> tuple[dict[str, object], dict[str, object]] | None:
        records = [record for record in _log_records(worker) if record["logger"] == "cloudjobs.jobs"]
        failed = next((record for record in records if "attempt 1/5 failed" in str(record["message"])), None)
        completed = next((record for record in records if "completed" in str(record["message"])), None)
        return (failed, completed) if failed and completed else None

    failed, completed = _wait_for(
        both_logged, seconds=_STARTUP_SECONDS, what="both jobs logged", worker=worker
    )
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait(_SHUTDOWN_TIMEOUT_SECONDS + _EXIT_MARGIN_SECONDS) == 0, worker.stderr()

    assert failed["level"] == "warning"
    assert (failed["job_type"], failed["attempt"]) == (GATED_JOB, 1)
    assert failed["job_id"]
    assert "TimeoutError" in str(failed["exception"])
    assert completed["level"] == "info"
    assert (completed["job_type"], completed["attempt"]) == (WORK_JOB, 1)
    assert completed["job_id"]


def test_text_logs_carry_each_failed_attempt_and_each_completion(
    fine_and_failing: str, spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker(fine_and_failing, _SLOW_RETRIES, ["--log-format", "text"])

    def both_logged() -> bool:
        stderr = worker.stderr()
        return " WARNING cloudjobs.jobs: job " in stderr and " INFO cloudjobs.jobs: job " in stderr

    _wait_for(both_logged, seconds=_STARTUP_SECONDS, what="both jobs logged", worker=worker)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait(_SHUTDOWN_TIMEOUT_SECONDS + _EXIT_MARGIN_SECONDS) == 0, worker.stderr()
    stderr = worker.stderr()
    assert "attempt 1/5 failed" in stderr
    assert "Traceback" in stderr
    assert "completed in" in stderr

"""The worker's promises on the memory backend: it refuses a queue without a DLQ, stops promptly,
releases what never started, and says when it stalls.

Each test runs a real worker in a thread (as ``jobs.worker().run()`` in a script would) and waits on
events with generous deadlines; the same promises are tested over HTTP against moto, with signals, in
``tests/integration/test_worker_process.py``.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from cloudjobs import CloudJobs, MemoryBackend, Settings
from cloudjobs.backends.base import Delivery
from cloudjobs.errors import BackendError, ConfigurationError
from cloudjobs.runtimes.health import Stall
from cloudjobs.runtimes.worker import ShutdownReport, Worker
from tests.otel import Capture

_DEADLINE = 20.0
"""Seconds any awaited condition may take before a test fails (the machine may be busy)."""


def _wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + _DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {_DEADLINE}s")
        time.sleep(0.02)


def _app(backend: MemoryBackend, **settings: Any) -> CloudJobs:
    options: dict[str, Any] = {"wait_time_seconds": 1, "shutdown_timeout_seconds": 10, **settings}
    return CloudJobs(settings=Settings(_env_file=None, **options), backend=backend)


class _Running:
    """A worker running in a thread; :meth:`stop` returns its report and how long the stop took."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.report: ShutdownReport | None = None
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="test-worker")
        self._thread.start()
        _wait_until(lambda: worker.started.is_set() or self.errors, "worker start")
        if self.errors:
            raise self.errors[0]

    def _run(self) -> None:
        try:
            self.report = self.worker.run()
        except BaseException as exc:  # surfaced in the test thread
            self.errors.append(exc)

    def stop(self) -> tuple[ShutdownReport, float]:
        started = time.monotonic()
        self.worker.stop()
        self._thread.join(_DEADLINE)
        assert not self._thread.is_alive(), "the worker did not stop"
        assert self.report is not None, self.errors
        return self.report, time.monotonic() - started


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event blocking handlers; set at the end so no handler thread outlives its test."""
    event = threading.Event()
    yield event
    event.set()


# -- start-up ---------------------------------------------------------------------------------------


def test_a_worker_on_a_queue_without_a_dead_letter_queue_refuses_to_start_naming_both_fixes() -> None:
    jobs = _app(MemoryBackend("jobs", max_receive_count=None))

    with pytest.raises(ConfigurationError) as raised:
        jobs.worker().run()

    assert raised.value.setting == "CLOUDJOBS_DLQ_URL"
    assert "redrive policy" in str(raised.value)
    assert "CLOUDJOBS_DLQ_URL" in str(raised.value)


def test_a_stall_timeout_within_the_long_poll_wait_is_refused() -> None:
    jobs = _app(MemoryBackend("jobs"), wait_time_seconds=20, stall_timeout_seconds=20)

    with pytest.raises(ConfigurationError) as raised:
        jobs.worker()

    assert raised.value.setting == "CLOUDJOBS_STALL_TIMEOUT_SECONDS"


# -- stopping ---------------------------------------------------------------------------------------


def test_an_idle_worker_stops_within_five_seconds_during_a_20_second_long_poll() -> None:
    worker = _app(MemoryBackend("jobs"), wait_time_seconds=20).worker(queue_metrics_interval=None)
    running = _Running(worker)
    _wait_until(lambda: worker.health().seconds_since_poll > 0.2, "a poll under way")

    report, seconds = running.stop()

    assert seconds < 5.0
    assert report == ShutdownReport()


def _one_running_three_waiting(
    gate: threading.Event, shutdown_timeout: timedelta
) -> tuple[MemoryBackend, _Running, list[str]]:
    """A worker with one slot holding four jobs that wait on ``gate``: one running, three prefetched;
    returns the queue, the running worker and the ids of the jobs that started."""
    backend = MemoryBackend("jobs", visibility_timeout=timedelta(minutes=5))
    jobs = _app(backend)
    started: list[str] = []

    @jobs.job("blocking")
    def blocking(payload: dict[str, str]) -> None:
        started.append(payload["id"])
        gate.wait(_DEADLINE)

    jobs.enqueue_many([("blocking", {"id": str(index)}) for index in range(4)])
    worker = jobs.worker(
        concurrency=1, prefetch=3, shutdown_timeout=shutdown_timeout, queue_metrics_interval=None
    )
    running = _Running(worker)
    _wait_until(lambda: backend.message_counts().in_flight == 4 and len(started) == 1, "all four held")
    return backend, running, started


def test_at_the_shutdown_deadline_unstarted_messages_are_released_and_running_ones_reported(
    gate: threading.Event,
) -> None:
    backend, running, started = _one_running_three_waiting(gate, timedelta(seconds=0.5))
    worker = running.worker

    report, _ = running.stop()

    assert report == ShutdownReport(released=3, abandoned=1)
    assert backend.message_counts().visible == 3
    assert worker.counts["released"] == 3
    assert len(started) == 1


# -- health -----------------------------------------------------------------------------------------


def test_a_worker_whose_every_slot_is_held_by_a_timed_out_handler_says_it_is_stalled(
    gate: threading.Event, otel: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    backend = MemoryBackend("jobs")
    jobs = _app(backend, job_timeout_seconds=0.2)

    @jobs.job("stuck")
    def stuck(payload: dict[str, str]) -> None:
        gate.wait(_DEADLINE)

    jobs.enqueue("stuck", {})
    worker = jobs.worker(concurrency=1, queue_metrics_interval=None)
    running = _Running(worker)
    try:
        _wait_until(lambda: not worker.health().is_healthy, "a stall")
        health = worker.health()
        assert health.stalls == {Stall.HANDLERS_OVERDUE}
        assert health.overdue_handlers == 1
        stall = {"messaging.destination.name": "jobs", "cloudjobs.worker.stall": "handlers_overdue"}
        _wait_until(lambda: otel.value("cloudjobs.worker.stalled", **stall) == 1, "the stall gauge at 1")
        _wait_until(
            lambda: any(
                r.levelno == logging.ERROR and "worker stalled" in r.getMessage() for r in caplog.records
            ),
            "the stall logged at ERROR",
        )

        gate.set()
        _wait_until(lambda: worker.health().is_healthy, "recovery once the handler returned")
        _wait_until(lambda: otel.value("cloudjobs.worker.stalled", **stall) == 0, "the stall gauge at 0")
    finally:
        running.stop()


def test_a_worker_busy_with_jobs_within_their_timeout_is_not_stalled(gate: threading.Event) -> None:
    backend = MemoryBackend("jobs")
    jobs = _app(backend, wait_time_seconds=1, stall_timeout_seconds=1.5)

    @jobs.job("long")
    def long(payload: dict[str, str]) -> None:
        gate.wait(_DEADLINE)

    jobs.enqueue("long", {})
    worker = jobs.worker(concurrency=1, prefetch=0, queue_metrics_interval=None)
    running = _Running(worker)
    try:
        _wait_until(lambda: backend.message_counts().in_flight == 1, "the job running")
        # Its one slot is taken, so the receiver does not poll: waiting for a slot is no stall. An
        # absence takes time to show: sleep past the stall timeout.
        time.sleep(2.0)
        assert worker.health().is_healthy, worker.health()
    finally:
        gate.set()
        running.stop()


class _BreakingBackend(MemoryBackend):
    """A memory queue whose receives fail once ``is_broken`` is set (an unreachable queue)."""

    is_broken = False

    def receive(
        self, *, max_messages: int, wait: timedelta, visibility: timedelta | None = None
    ) -> list[Delivery]:
        if self.is_broken:
            raise BackendError("the queue cannot be reached", queue=self.name)
        return super().receive(max_messages=max_messages, wait=wait, visibility=visibility)


def test_a_worker_whose_receive_loop_completes_no_poll_for_the_stall_timeout_says_it_is_stalled() -> None:
    backend = _BreakingBackend("jobs")
    worker = _app(backend, wait_time_seconds=1, stall_timeout_seconds=2).worker(queue_metrics_interval=None)
    running = _Running(worker)
    try:
        # Idle one-second polls keep completing: no stall past the timeout (an absence takes time).
        time.sleep(2.5)
        assert worker.health().is_healthy

        backend.is_broken = True
        _wait_until(lambda: not worker.health().is_healthy, "a stall")
        assert worker.health().stalls == {Stall.RECEIVER_STALLED}

        backend.is_broken = False
        _wait_until(lambda: worker.health().is_healthy, "recovery once polls complete again")
    finally:
        running.stop()


def test_jobs_worker_serves_its_health_check_when_given_a_port() -> None:
    jobs = _app(MemoryBackend("jobs"))
    worker = jobs.worker(concurrency=1, health_port=0, stall_timeout=30, queue_metrics_interval=None)
    running = _Running(worker)
    try:
        server = worker.health_server
        assert server is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as answer:
            assert answer.status == 200
    finally:
        running.stop()


def test_messages_waiting_for_a_slot_when_the_stop_comes_are_released_unrun_once_it_frees(
    gate: threading.Event,
) -> None:
    backend, running, started = _one_running_three_waiting(gate, timedelta(seconds=10))
    worker = running.worker

    worker.stop()
    gate.set()  # the running job returns: its slot frees with the stop already asked
    report, _ = running.stop()

    assert started == ["0"]  # the three waiting never started
    assert report == ShutdownReport(released=3)
    assert backend.message_counts().visible == 3
    assert worker.counts["completed"] == 1

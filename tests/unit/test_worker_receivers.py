"""A standard queue's lane polls with a second receiver while its overlap trigger holds, never while
it does not, never with ``CLOUDJOBS_RECEIVERS=1`` and never on a FIFO queue. The trigger's inputs (the
clocks and the machine's idle CPU) are injected: the tests do not lean on this machine's timing."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest

from cloudjobs import CloudJobs, MemoryBackend, Settings
from cloudjobs.backends.base import Delivery
from cloudjobs.runtimes import lanes
from cloudjobs.runtimes.overlap import IdleCpu, OverlapTrigger
from cloudjobs.runtimes.worker import Worker

_DEADLINE = 20.0
"""Seconds any awaited condition may take before a test fails (the machine may be busy)."""


class _PollWatch(MemoryBackend):
    """A memory queue that counts the receives in flight at once. While ``hold()`` says so, a receive
    that has messages waits until a second one is in flight (or the deadline passes)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.in_flight = 0
        self.most_in_flight = 0
        self.hold: Callable[[], bool] = lambda: False

    def receive(
        self, *, max_messages: int, wait: timedelta, visibility: timedelta | None = None
    ) -> list[Delivery]:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self._changed.notify_all()
        try:
            received = super().receive(max_messages=max_messages, wait=wait, visibility=visibility)
            if received and self.hold():
                with self._lock:
                    self._changed.wait_for(lambda: self.in_flight >= 2, timeout=_DEADLINE)
            return received
        finally:
            with self._lock:
                self.in_flight -= 1


class _Triggers:
    """Builds the lanes' triggers on injected inputs: every receive waits 10 ms on the network beside
    no CPU of the process, and the machine is ``idle`` (a share) over each sample."""

    def __init__(self, idle: float) -> None:
        self._idle = idle
        self._ticks = itertools.count()
        self._sampled = itertools.count()
        self.built: list[OverlapTrigger] = []

    def __call__(self, batch: int) -> OverlapTrigger:
        def read() -> tuple[int, int]:
            at = next(self._sampled)
            return round(at * 100 * self._idle), at * 100

        idle = IdleCpu(read, clock=lambda: float(next(self._sampled)))
        trigger = OverlapTrigger(batch, idle=idle, cpu=lambda: 0.0, clock=lambda: next(self._ticks) * 0.01)
        self.built.append(trigger)
        return trigger


def _wait_until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + _DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {_DEADLINE}s")
        time.sleep(0.01)


@contextmanager
def _running(backend: MemoryBackend, *, receivers: int = 2) -> Iterator[tuple[CloudJobs, Worker, list[int]]]:
    settings = Settings(_env_file=None, wait_time_seconds=1, receivers=receivers)
    jobs = CloudJobs(settings=settings, backend=backend)
    done: list[int] = []
    lock = threading.Lock()

    def noop(payload: dict[str, int]) -> None:
        with lock:
            done.append(payload["n"])

    jobs.job("noop")(noop)
    worker = jobs.worker(concurrency=8, queue_metrics_interval=None)
    try:
        yield jobs, worker, done
    finally:
        worker.stop()


@contextmanager
def _started(worker: Worker) -> Iterator[None]:
    thread = threading.Thread(target=worker.run, name="test-worker")
    thread.start()
    try:
        _wait_until(worker.started.is_set, "worker start")
        yield
    finally:
        worker.stop()
        thread.join(_DEADLINE)
        assert not thread.is_alive(), "the worker did not stop"


def test_while_the_trigger_holds_two_receives_are_under_way_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    triggers = _Triggers(idle=0.6)
    monkeypatch.setattr(lanes, "OverlapTrigger", triggers)
    backend = _PollWatch("jobs")
    backend.hold = lambda: bool(triggers.built) and triggers.built[0].on.is_set()
    with _running(backend) as (jobs, worker, done):
        jobs.enqueue_many([("noop", {"n": n}) for n in range(300)])
        with _started(worker):
            _wait_until(lambda: len(done) == 300, "300 jobs done")

    assert backend.most_in_flight == 2
    assert sorted(done) == list(range(300))


def test_while_the_machine_has_no_idle_cpu_one_receive_is_under_way_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    triggers = _Triggers(idle=0.05)
    monkeypatch.setattr(lanes, "OverlapTrigger", triggers)
    backend = _PollWatch("jobs")
    with _running(backend) as (jobs, worker, done):
        jobs.enqueue_many([("noop", {"n": n}) for n in range(300)])
        with _started(worker):
            _wait_until(lambda: len(done) == 300, "300 jobs done")

    assert len(triggers.built) == 1
    assert not triggers.built[0].on.is_set()
    assert backend.most_in_flight == 1


@pytest.mark.parametrize(
    ("queue", "receivers"),
    [
        pytest.param("jobs", 1, id="one receiver when configured so"),
        pytest.param("jobs.fifo", 2, id="a FIFO queue however many are allowed"),
    ],
)
def test_one_receiver_polls_at_a_time(monkeypatch: pytest.MonkeyPatch, queue: str, receivers: int) -> None:
    triggers = _Triggers(idle=0.6)
    monkeypatch.setattr(lanes, "OverlapTrigger", triggers)
    backend = _PollWatch(queue)
    with _running(backend, receivers=receivers) as (jobs, worker, done):
        jobs.enqueue_many([("noop", {"n": n}) for n in range(100)])
        with _started(worker):
            _wait_until(lambda: len(done) == 100, "100 jobs done")

    assert triggers.built == []
    assert backend.most_in_flight == 1


def test_an_idle_queue_is_polled_by_one_receiver_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    triggers = _Triggers(idle=0.6)
    monkeypatch.setattr(lanes, "OverlapTrigger", triggers)
    backend = _PollWatch("jobs")
    with _running(backend) as (_, worker, _done), _started(worker):
        _wait_until(lambda: worker.receives >= 3, "three empty polls")  # 1 s long polls
        assert worker.health().is_healthy  # the parked second receiver is not a stall

    assert not triggers.built[0].on.is_set()
    assert backend.most_in_flight == 1

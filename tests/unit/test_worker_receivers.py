"""A standard queue's lane polls with a second receiver while the queue is busy over a network, never
while it is idle or answers at once, and never on a FIFO queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest

from cloudjobs import CloudJobs, MemoryBackend, Settings
from cloudjobs.backends.base import Delivery
from cloudjobs.runtimes.worker import Worker

_DEADLINE = 20.0


class _PollWatch(MemoryBackend):
    """A memory queue that counts the receives in flight at once; while `hold` is set, a receive that
    has messages waits there until two are in flight (or the deadline passes)."""

    def __init__(self, name: str, *, round_trip: float = 0.0) -> None:
        super().__init__(name)
        self._round_trip = round_trip
        self._lock = threading.Lock()
        self._two = threading.Condition(self._lock)
        self.in_flight = 0
        self.most_in_flight = 0
        self.polls = 0
        self.hold = False

    def receive(
        self, *, max_messages: int, wait: timedelta, visibility: timedelta | None = None
    ) -> list[Delivery]:
        with self._lock:
            self.in_flight += 1
            self.polls += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self._two.notify_all()
            if self.hold:
                self._two.wait_for(lambda: self.in_flight >= 2, timeout=2)
        try:
            received = super().receive(max_messages=max_messages, wait=wait, visibility=visibility)
            if received and self._round_trip:
                time.sleep(self._round_trip)  # the network's share of a round trip, not a wait for an event
            return received
        finally:
            with self._lock:
                self.in_flight -= 1


def _wait_until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + _DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {_DEADLINE}s")
        time.sleep(0.01)


@contextmanager
def _running(backend: MemoryBackend) -> Iterator[tuple[CloudJobs, Worker, list[int]]]:
    jobs = CloudJobs(settings=Settings(_env_file=None, wait_time_seconds=1), backend=backend)
    done: list[int] = []
    jobs.job("noop")(lambda payload: done.append(payload["n"]))
    worker = jobs.worker(concurrency=8, queue_metrics_interval=None)
    thread = threading.Thread(target=worker.run)
    thread.start()
    _wait_until(worker.started.is_set, "worker start")
    try:
        yield jobs, worker, done
    finally:
        worker.stop()
        thread.join(_DEADLINE)
        assert not thread.is_alive()


def test_a_busy_standard_queue_over_a_network_is_polled_by_two_receivers_at_once() -> None:
    backend = _PollWatch("jobs", round_trip=0.01)
    with _running(backend) as (jobs, _, done):
        backend.hold = True
        jobs.enqueue_many([("noop", {"n": n}) for n in range(300)])
        _wait_until(lambda: len(done) == 300, "300 jobs done")

    assert backend.most_in_flight == 2
    assert sorted(done) == list(range(300))


def test_a_busy_queue_that_answers_at_once_is_polled_by_one_receiver_at_a_time() -> None:
    backend = _PollWatch("jobs")
    with _running(backend) as (jobs, _, done):
        jobs.enqueue_many([("noop", {"n": n}) for n in range(300)])
        _wait_until(lambda: len(done) == 300, "300 jobs done")

    assert backend.most_in_flight == 1


def test_an_idle_queue_is_polled_by_one_receiver_at_a_time() -> None:
    backend = _PollWatch("jobs")
    with _running(backend) as (_, worker, _done):
        _wait_until(lambda: worker.receives >= 4, "four empty polls")  # 1 s long polls

    assert backend.most_in_flight == 1


def test_a_fifo_queue_is_polled_by_one_receiver_however_busy() -> None:
    backend = _PollWatch("jobs.fifo", round_trip=0.01)
    with _running(backend) as (jobs, _, done):
        jobs.enqueue_many([("noop", {"n": n}) for n in range(100)])
        _wait_until(lambda: len(done) == 100, "100 jobs done")

    assert backend.most_in_flight == 1

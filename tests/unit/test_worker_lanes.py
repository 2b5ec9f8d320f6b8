"""A worker's promises per queue, on the memory backend: each queue keeps its own visibility and
heartbeat, its own DLQ check, its own stall detection and its own queue gauges."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest

from cloudjobs import CloudJobs, ConfigurationError, MemoryBackend, Settings
from cloudjobs.backends.base import Delivery
from cloudjobs.errors import BackendError
from cloudjobs.runtimes.health import Stall
from cloudjobs.runtimes.worker import Worker
from tests.otel import Capture

_DEADLINE = 20.0
"""Seconds any awaited condition may take before a test fails (the machine may be busy)."""


def _wait_until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + _DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {_DEADLINE}s")
        time.sleep(0.02)


def _app(default: MemoryBackend, **named: MemoryBackend) -> CloudJobs:
    settings = Settings(_env_file=None, wait_time_seconds=1, shutdown_timeout_seconds=10)
    return CloudJobs(settings=settings, backend=default, queues=named)


@contextmanager
def _running(worker: Worker) -> Iterator[Worker]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="test-worker")
    thread.start()
    _wait_until(lambda: worker.started.is_set() or errors, "worker start")
    try:
        if errors:
            raise errors[0]
        yield worker
    finally:
        worker.stop()
        thread.join(_DEADLINE)
        assert not thread.is_alive(), "the worker did not stop"


def test_each_queue_keeps_its_messages_hidden_with_its_own_visibility_timeout() -> None:
    # The default queue's 60 s would leave bulk's 2-second messages unextended for 20 s.
    default = MemoryBackend("jobs", visibility_timeout=timedelta(seconds=60))
    bulk = default.sibling("jobs-bulk", visibility_timeout=timedelta(seconds=2))
    jobs = _app(default, bulk=bulk)
    starts: list[int] = []

    @jobs.job("slow", queue="bulk", timeout=30)
    def slow(payload: dict[str, int]) -> None:
        starts.append(payload["n"])
        time.sleep(3.5)  # the work itself: longer than bulk's visibility timeout

    slow.enqueue({"n": 1})
    worker = jobs.worker(queues=["default", "bulk"], queue_metrics_interval=None)
    with _running(worker):
        _wait_until(lambda: starts, "the slow job started")
        [held] = bulk.messages()
        # Received for bulk's 2 seconds, not the default queue's 60 (and extended by bulk's heartbeat).
        assert held.visible_at - bulk.now() <= timedelta(seconds=2)
        _wait_until(lambda: worker.counts["completed"] == 1, "the slow job done")

    assert starts == [1]
    assert len(bulk) == 0


def test_a_named_queue_without_a_dead_letter_queue_refuses_the_worker_naming_it() -> None:
    default = MemoryBackend("jobs")
    jobs = _app(default, bulk=default.sibling("jobs-bulk", max_receive_count=None))

    with pytest.raises(ConfigurationError, match="'jobs-bulk' has no dead-letter queue"):
        jobs.worker(queues={"default": 1, "bulk": 1}).run()


class _BreakingBackend(MemoryBackend):
    """A memory queue whose receives fail once ``is_broken`` is set (an unreachable queue)."""

    is_broken = False

    def receive(
        self, *, max_messages: int, wait: timedelta, visibility: timedelta | None = None
    ) -> list[Delivery]:
        if self.is_broken:
            raise BackendError("the queue cannot be reached", queue=self.name)
        return super().receive(max_messages=max_messages, wait=wait, visibility=visibility)


def test_a_stalled_receive_loop_on_one_queue_is_reported_for_that_queue(otel: Capture) -> None:
    default = MemoryBackend("stalls")
    bulk = _BreakingBackend("stalls-bulk")
    jobs = CloudJobs(
        settings=Settings(_env_file=None, wait_time_seconds=1, stall_timeout_seconds=2),
        backend=default,
        queues={"bulk": bulk},
    )
    worker = jobs.worker(queues=["default", "bulk"], queue_metrics_interval=None)

    def receiver_stalled(name: str) -> float:
        attributes = {"cloudjobs.worker.stall": "receiver_stalled", "messaging.destination.name": name}
        return otel.value("cloudjobs.worker.stalled", **attributes)

    with _running(worker):
        bulk.is_broken = True
        _wait_until(lambda: not worker.health().is_healthy, "a stall")
        health = worker.health()
        assert health.stalls == {Stall.RECEIVER_STALLED}
        assert health.stalled_queues == ("stalls-bulk",)
        assert "no poll of stalls-bulk completed" in health.describe()
        _wait_until(lambda: receiver_stalled("stalls-bulk") == 1, "bulk's stall gauge at 1")
        assert receiver_stalled("stalls") == 0

        bulk.is_broken = False
        _wait_until(lambda: worker.health().is_healthy, "recovery once bulk's polls complete again")


def test_every_queue_of_a_worker_has_its_own_queue_gauges(otel: Capture) -> None:
    default = MemoryBackend("gauges")
    bulk = default.sibling("gauges-bulk")
    jobs = _app(default, bulk=bulk)
    jobs.enqueue("later", {}, delay=600)
    jobs.enqueue_many([("later", {}), ("later", {})], delay=600, queue="bulk")
    worker = jobs.worker(queues={"default": 1, "bulk": 1}, queue_metrics_interval=timedelta(milliseconds=50))

    def delayed(name: str) -> float:
        return otel.value("cloudjobs.queue.delayed", **{"messaging.destination.name": name})

    with _running(worker):
        _wait_until(lambda: (delayed("gauges"), delayed("gauges-bulk")) == (1, 2), "each queue's gauge")

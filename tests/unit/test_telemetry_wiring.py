"""``CloudJobs(telemetry=...)`` reaches the producer, the consumer, the worker and the Lambda handler."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from opentelemetry import trace

from cloudjobs import CloudJobs, ConfigurationError, ManualClock, MemoryBackend, Settings
from cloudjobs.backends.base import QueueCounts
from cloudjobs.runtimes.worker import Worker
from cloudjobs.telemetry import Telemetry
from tests.fresh import run_fresh
from tests.otel import Capture
from tests.unit.test_aws_lambda import FakeContext, event_of, receive_all

DEADLINE = 10.0
_READER_THREAD = "cloudjobs-queue-metrics"


class _CountedBackend(MemoryBackend):
    """A memory queue that says when its counts were read."""

    def __init__(self, name: str) -> None:
        super().__init__(name, max_receive_count=10)
        self.counted = threading.Event()

    def message_counts(self) -> QueueCounts:
        self.counted.set()
        return super().message_counts()


def _app(telemetry: Telemetry | None, backend: MemoryBackend | None = None) -> CloudJobs:
    if backend is None:
        backend = MemoryBackend(f"jobs-{uuid.uuid4().hex[:8]}", max_receive_count=10)
    jobs = CloudJobs(
        settings=Settings(_env_file=None, wait_time_seconds=1, shutdown_timeout_seconds=5),
        backend=backend,
        clock=ManualClock(),
        telemetry=telemetry,
    )

    @jobs.job("noop")
    def noop(payload: dict[str, str]) -> None:
        pass

    return jobs


@contextmanager
def _running(worker: Worker) -> Iterator[None]:
    thread = threading.Thread(target=worker.run, name="wiring-worker")
    thread.start()
    try:
        assert worker.started.wait(DEADLINE), "the worker did not start"
        yield
    finally:
        worker.stop()
        thread.join(timeout=DEADLINE)
    assert not thread.is_alive(), "the worker did not stop"


def _reader_threads() -> int:
    return sum(thread.name == _READER_THREAD and thread.is_alive() for thread in threading.enumerate())


@pytest.mark.parametrize("is_enabled", [True, False], ids=["enabled", "disabled"])
def test_the_apps_telemetry_governs_its_producer_and_consumer(otel: Capture, is_enabled: bool) -> None:
    jobs = _app(Telemetry(is_enabled=is_enabled))
    backend = jobs.backend
    assert isinstance(backend, MemoryBackend)

    with trace.get_tracer("test").start_as_current_span("request"):
        jobs.enqueue("noop", {})
    [message] = backend.messages()
    report = jobs.drain()

    assert report.completed == 1
    assert jobs.telemetry.is_enabled is is_enabled
    assert ("traceparent" in message.attributes) is is_enabled
    assert len(otel.spans(f"send {backend.name}")) == int(is_enabled)
    assert len(otel.spans(f"process {backend.name}")) == int(is_enabled)


@pytest.mark.parametrize("is_enabled", [True, False], ids=["enabled", "disabled"])
def test_the_apps_telemetry_governs_its_lambda_handler(otel: Capture, is_enabled: bool) -> None:
    jobs = _app(Telemetry(is_enabled=is_enabled))
    backend = jobs.backend
    assert isinstance(backend, MemoryBackend)
    jobs.enqueue("noop", {})
    handler = jobs.lambda_handler()
    try:
        response = handler(event_of(receive_all(backend)), FakeContext())
    finally:
        handler.close()

    assert response == {"batchItemFailures": []}
    assert len(otel.spans(f"process {backend.name}")) == int(is_enabled)


def test_without_a_telemetry_argument_the_app_traces_through_the_global_providers(otel: Capture) -> None:
    jobs = _app(None)
    backend = jobs.backend
    assert isinstance(backend, MemoryBackend)
    jobs.enqueue("noop", {})
    jobs.drain()

    assert jobs.telemetry.is_enabled
    assert len(otel.spans(f"process {backend.name}")) == 1


def test_the_worker_takes_a_queue_metrics_interval_in_seconds_or_as_a_timedelta() -> None:
    jobs = _app(None)

    assert jobs.worker().queue_metrics_interval == timedelta(seconds=60)
    assert jobs.worker(queue_metrics_interval=5).queue_metrics_interval == timedelta(seconds=5)
    assert jobs.worker(queue_metrics_interval=timedelta(minutes=2)).queue_metrics_interval == timedelta(
        minutes=2
    )
    assert jobs.worker(queue_metrics_interval=None).queue_metrics_interval is None


@pytest.mark.parametrize("interval", [0, -1, timedelta(0)])
def test_a_queue_metrics_interval_that_is_not_positive_is_refused(interval: float | timedelta) -> None:
    with pytest.raises(ConfigurationError, match="queue_metrics_interval"):
        _app(None).worker(queue_metrics_interval=interval)


def test_a_running_worker_reads_the_queue_counts_for_its_gauges(otel: Capture) -> None:
    backend = _CountedBackend(f"jobs-{uuid.uuid4().hex[:8]}")
    worker = _app(None, backend).worker(queue_metrics_interval=60)

    with _running(worker):
        assert backend.counted.wait(DEADLINE), "the queue's counts were never read"
        assert _reader_threads() == 1


def test_disabled_telemetry_turns_the_workers_queue_gauges_off() -> None:
    backend = _CountedBackend(f"jobs-{uuid.uuid4().hex[:8]}")
    worker = _app(Telemetry(is_enabled=False), backend).worker(queue_metrics_interval=60)

    with _running(worker):
        # The reader thread would start before the worker reports started: none is running.
        assert _reader_threads() == 0
    assert not backend.counted.is_set()


def test_a_worker_without_an_sdk_runs_no_reader_until_its_heartbeat_finds_one() -> None:
    # A fresh interpreter: this process has the SDK installed by other tests.
    script = """
import json, threading, time
from cloudjobs import CloudJobs, MemoryBackend
from cloudjobs.settings import SettingsModel
from cloudjobs.telemetry.metrics import QueueMetricsReader
pokes = threading.Semaphore(0)
poke = QueueMetricsReader.poke
def counted_poke(self):
    poke(self)
    pokes.release()
QueueMetricsReader.poke = counted_poke
def readers():
    return sum(t.name == "cloudjobs-queue-metrics" for t in threading.enumerate())
settings = SettingsModel(wait_time_seconds=1, heartbeat_interval_seconds=0.2, shutdown_timeout_seconds=5)
jobs = CloudJobs(settings=settings, backend=MemoryBackend("jobs", max_receive_count=10))
jobs.job("noop")(lambda payload: None)
worker = jobs.worker(queue_metrics_interval=60)
thread = threading.Thread(target=worker.run)
thread.start()
assert worker.started.wait(30)
for _ in range(3):  # three heartbeats with no SDK: no reader may start
    assert pokes.acquire(timeout=30)
before = readers()
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
metrics.set_meter_provider(MeterProvider())
deadline = time.monotonic() + 30
while readers() == 0 and time.monotonic() < deadline:
    time.sleep(0.01)
after = readers()
worker.stop()
thread.join(30)
print(json.dumps([before, after, readers()]))
"""
    stdout = run_fresh(script)

    assert json.loads(stdout) == [0, 1, 0]

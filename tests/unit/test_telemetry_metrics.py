"""Job counters and histograms, the queue gauges and the Prometheus endpoint."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from datetime import timedelta

import pytest

from cloudjobs import CloudJobs, ManualClock, MemoryBackend, PermanentError, RetryableError, Settings
from cloudjobs.backends.base import OutgoingMessage
from cloudjobs.cli.worker import worker
from cloudjobs.runtimes.health import Stall
from cloudjobs.telemetry.metrics import QueueMetricsReader
from tests.fresh import run_fresh
from tests.otel import Capture

DEADLINE = 10.0


def _app() -> tuple[CloudJobs, MemoryBackend]:
    backend = MemoryBackend(f"jobs-{uuid.uuid4().hex[:8]}", max_receive_count=10)
    jobs = CloudJobs(
        settings=Settings(_env_file=None), backend=backend, clock=ManualClock(), random=lambda: 0.5
    )
    return jobs, backend


def test_jobs_are_counted_by_type_and_outcome(otel: Capture) -> None:
    jobs, backend = _app()
    queue = {"messaging.destination.name": backend.name}

    @jobs.job("ok")
    def ok(payload: dict[str, str]) -> None:
        pass

    @jobs.job("flaky", max_attempts=3)
    def flaky(payload: dict[str, str]) -> None:
        raise RetryableError("later")

    @jobs.job("doomed")
    def doomed(payload: dict[str, str]) -> None:
        raise PermanentError("never")

    jobs.enqueue_many([("ok", {}), ("ok", {}), ("flaky", {}), ("doomed", {})])
    jobs.drain()

    assert otel.value("cloudjobs.jobs.enqueued", **queue, **{"cloudjobs.job.type": "ok"}) == 2
    assert otel.value("cloudjobs.jobs.enqueued", **queue) == 4
    assert otel.value("cloudjobs.jobs.succeeded", **queue, **{"cloudjobs.job.type": "ok"}) == 2
    assert otel.value("cloudjobs.jobs.failed", **queue, **{"cloudjobs.job.type": "flaky"}) == 3
    assert otel.value("cloudjobs.jobs.retried", **queue, **{"cloudjobs.job.type": "flaky"}) == 2
    assert otel.value("cloudjobs.jobs.dead_lettered", **queue, **{"cloudjobs.job.type": "flaky"}) == 1
    assert (
        otel.value(
            "cloudjobs.jobs.dead_lettered",
            **queue,
            **{"cloudjobs.job.type": "doomed", "cloudjobs.dead_letter.reason": "permanent_error"},
        )
        == 1
    )
    assert (
        otel.value("cloudjobs.jobs.failed", **queue, **{"error.type": "cloudjobs.errors.PermanentError"}) == 1
    )
    assert otel.count("cloudjobs.job.duration", **queue) == 6
    assert otel.count("cloudjobs.job.queue_lag", **queue) == 4  # six runs, four first attempts
    assert otel.value("cloudjobs.jobs.in_flight", **queue) == 0


def test_the_in_flight_counter_counts_a_running_handler(otel: Capture) -> None:
    jobs, backend = _app()
    queue = {"messaging.destination.name": backend.name}
    inside: list[float] = []

    @jobs.job("look")
    def look(payload: dict[str, str]) -> None:
        inside.append(otel.value("cloudjobs.jobs.in_flight", **queue))

    jobs.enqueue("look", {})
    jobs.drain()

    assert inside == [1]
    assert otel.value("cloudjobs.jobs.in_flight", **queue) == 0


def test_the_queue_reader_sets_depth_in_flight_delayed_and_dlq_gauges(otel: Capture) -> None:
    jobs, backend = _app()
    queue = {"messaging.destination.name": backend.name}
    jobs.enqueue("a", {})
    jobs.enqueue("b", {})
    jobs.enqueue("c", {}, delay=60)
    backend.receive(max_messages=1, wait=timedelta(0))
    assert backend.dead_letter_queue is not None
    backend.dead_letter_queue.send([OutgoingMessage(body="{}")])
    reader = QueueMetricsReader(backend, queue=backend.name, interval=timedelta(seconds=60))

    reader.read_once()

    assert otel.value("cloudjobs.queue.depth", **queue) == 1
    assert otel.value("cloudjobs.queue.in_flight", **queue) == 1
    assert otel.value("cloudjobs.queue.delayed", **queue) == 1
    assert otel.value("cloudjobs.queue.dlq_depth", **queue) == 1


def test_the_queue_reader_reads_at_its_interval_on_its_own_thread(otel: Capture) -> None:
    jobs, backend = _app()
    queue = {"messaging.destination.name": backend.name}
    reader = QueueMetricsReader(backend, queue=backend.name, interval=timedelta(milliseconds=20))
    reader.start()
    try:
        jobs.enqueue("a", {})
        deadline = time.monotonic() + DEADLINE
        while otel.value("cloudjobs.queue.depth", **queue) != 1:
            assert time.monotonic() < deadline, "the depth gauge never reported the message"
            threading.Event().wait(0.01)
    finally:
        reader.stop()
    assert reader.reads >= 1


def test_a_worker_reads_queue_counts_once_a_minute_by_default() -> None:
    jobs, _ = _app()

    assert jobs.worker().queue_metrics_interval == timedelta(seconds=60)


def test_the_worker_command_takes_a_metrics_port() -> None:
    context = worker.make_context("worker", ["app:jobs", "--metrics-port", "9464"])

    assert context.params["metrics_port"] == 9464


def test_prometheus_serves_cloudjobs_metrics_in_a_fresh_process() -> None:
    # A fresh interpreter: the SDK's global meter provider can be set once per process.
    script = """
import json, urllib.request
from cloudjobs import CloudJobs, MemoryBackend, Settings
from cloudjobs.telemetry.prometheus import serve_prometheus
server = serve_prometheus(0, address="127.0.0.1")
jobs = CloudJobs(settings=Settings(_env_file=None), backend=MemoryBackend("scraped"))
@jobs.job("ok")
def ok(payload: dict) -> None:
    pass
jobs.enqueue("ok", {})
jobs.drain()
body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10).read().decode()
print(json.dumps([line for line in body.splitlines() if line.startswith("cloudjobs_jobs_")]))
"""
    stdout = run_fresh(script)

    lines = json.loads(stdout)
    assert any(line.startswith("cloudjobs_jobs_enqueued_total{") and line.endswith(" 1.0") for line in lines)
    assert any(line.startswith("cloudjobs_jobs_succeeded_total{") and line.endswith(" 1.0") for line in lines)


def test_prometheus_without_the_exporter_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.prometheus", None)
    from cloudjobs.telemetry.prometheus import serve_prometheus

    with pytest.raises(ImportError, match=r"cloudjobs\[otel\]"):
        serve_prometheus(0)


def test_without_an_sdk_the_queue_reader_reads_nothing_until_one_is_installed() -> None:
    # A fresh interpreter: this process has the SDK installed by other tests.
    script = """
import json, sys
from datetime import timedelta
from cloudjobs import MemoryBackend
from cloudjobs.telemetry.metrics import QueueMetricsReader
backend = MemoryBackend("jobs")
calls = []
counts = backend.message_counts
backend.message_counts = lambda: calls.append(1) or counts()
reader = QueueMetricsReader(backend, queue="jobs", interval=timedelta(seconds=60))
reader.tick()
before = [len(calls), reader.reads, any(m.startswith("opentelemetry") for m in sys.modules)]
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
metrics.set_meter_provider(MeterProvider())
reader.tick()
print(json.dumps([before, [len(calls), reader.reads]]))
"""
    stdout = run_fresh(script)

    assert json.loads(stdout) == [[0, 0, False], [1, 1]]


def test_without_an_sdk_the_queue_reader_starts_no_thread_until_a_poke_finds_one() -> None:
    # A fresh interpreter: this process has the SDK installed by other tests.
    script = """
import json, threading, time
from datetime import timedelta
from cloudjobs import MemoryBackend
from cloudjobs.telemetry.metrics import QueueMetricsReader
def readers():
    return sum(t.name == "cloudjobs-queue-metrics" for t in threading.enumerate())
backend = MemoryBackend("jobs")
reader = QueueMetricsReader(backend, queue="jobs", interval=timedelta(seconds=60))
reader.start()
reader.poke()
before = [readers(), reader.is_reading, reader.reads]
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
metrics.set_meter_provider(MeterProvider())
reader.poke()
reader.poke()
deadline = time.monotonic() + 30
while reader.reads == 0 and time.monotonic() < deadline:
    time.sleep(0.01)
after = [readers(), reader.is_reading, reader.reads]
reader.stop()
idle = QueueMetricsReader(backend, queue="jobs", interval=timedelta(seconds=60))
idle.poke()
print(json.dumps([before, after, [reader.is_reading, readers(), idle.is_reading]]))
"""
    stdout = run_fresh(script)

    # No thread without an SDK; one (reading at once) from the first poke after it; none after
    # stop; and a reader never started is not started by a poke.
    assert json.loads(stdout) == [[0, False, 0], [1, True, 1], [False, 0, False]]


def test_the_stall_gauge_is_set_once_an_sdk_is_installed_and_not_loaded_before() -> None:
    # A fresh interpreter: the health watch meters nothing (and loads no metrics API) without an
    # SDK, then sets the gauge at its next observation once one is installed, with no stall change.
    script = """
import json, sys
from cloudjobs.runtimes.health import HealthWatch, Stall, WorkerHealth
watch = HealthWatch(["jobs"])
stalled = WorkerHealth(frozenset({Stall.RECEIVER_STALLED}), 0, 1, 99.0, ("jobs",))
watch.observe(stalled)
before = any(m.startswith("opentelemetry") for m in sys.modules)
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
watch.observe(stalled)
points = {
    point.attributes["cloudjobs.worker.stall"]: point.value
    for resource in reader.get_metrics_data().resource_metrics
    for scope in resource.scope_metrics
    for metric in scope.metrics if metric.name == "cloudjobs.worker.stalled"
    for point in metric.data.data_points
}
print(json.dumps([before, points]))
"""
    stdout = run_fresh(script)

    before, points = json.loads(stdout)
    assert before is False
    assert points[Stall.RECEIVER_STALLED.value] == 1
    assert set(points.values()) == {0, 1}
    assert len(points) == len(Stall)

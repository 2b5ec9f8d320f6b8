"""Spans of enqueues and job runs, on the memory backend, recorded by the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from cloudjobs import (
    CloudJobs,
    Delivery,
    Job,
    ManualClock,
    MemoryBackend,
    PermanentError,
    Retry,
    Settings,
    current_job,
)
from cloudjobs.backends.base import OutgoingMessage
from cloudjobs.consumer import Consumer
from cloudjobs.producer import EnqueueRequest, Producer
from cloudjobs.run import Run
from cloudjobs.runtimes.drain import drain
from cloudjobs.telemetry import SEMCONV_VERSION, Telemetry, current_correlation_id, providers
from cloudjobs.telemetry.spans import SCHEMA_URL, RunTrace, is_idle
from tests.fresh import run_fresh
from tests.otel import Capture, links_to


def _app(**settings: object) -> tuple[CloudJobs, MemoryBackend]:
    backend = MemoryBackend(f"jobs-{uuid.uuid4().hex[:8]}", clock=ManualClock(), max_receive_count=10)
    jobs = CloudJobs(
        settings=Settings(_env_file=None, **settings),  # type: ignore[arg-type]
        backend=backend,
        clock=ManualClock(),
        random=lambda: 0.5,
    )
    return jobs, backend


def test_producer_and_consumer_spans_share_one_trace_and_the_consumer_is_the_producers_child(
    otel: Capture,
) -> None:
    jobs, backend = _app()

    @jobs.job("greet")
    def greet(payload: dict[str, str]) -> None:
        pass

    job_id = jobs.enqueue("greet", {"name": "Ada"})
    jobs.drain()

    send = otel.span(f"send {backend.name}")
    process = otel.span(f"process {backend.name}")
    assert send.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == send.context.trace_id
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert links_to(process) == [send.context.span_id]
    assert len(backend) == 0
    assert send.attributes is not None
    assert process.attributes is not None
    assert send.attributes["messaging.system"] == "aws_sqs"
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.operation.name"] == "send"
    assert send.attributes["messaging.destination.name"] == backend.name
    assert send.attributes["cloudjobs.job.id"] == job_id
    assert "messaging.batch.message_count" not in send.attributes
    assert process.attributes["messaging.system"] == "aws_sqs"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.operation.name"] == "process"
    assert process.attributes["messaging.destination.name"] == backend.name
    assert process.attributes["messaging.message.id"] == send.attributes["messaging.message.id"]
    assert process.attributes["cloudjobs.job.type"] == "greet"
    assert process.attributes["cloudjobs.job.id"] == job_id
    assert process.attributes["cloudjobs.job.attempt"] == 1
    assert process.attributes["cloudjobs.job.outcome"] == "completed"
    assert process.status.status_code is StatusCode.UNSET
    assert process.instrumentation_scope is not None
    assert process.instrumentation_scope.schema_url == SCHEMA_URL
    assert SEMCONV_VERSION in SCHEMA_URL


def test_a_batch_gives_each_message_its_own_creation_context_and_the_send_links_to_them(
    otel: Capture,
) -> None:
    jobs, backend = _app()

    @jobs.job("greet")
    def greet(payload: dict[str, str]) -> None:
        pass

    jobs.enqueue_many([("greet", {"name": str(index)}) for index in range(3)])
    jobs.drain()

    creates = otel.spans(f"create {backend.name}")
    send = otel.span(f"send {backend.name}")
    processes = otel.spans(f"process {backend.name}")
    assert len(creates) == 3
    assert len(processes) == 3
    assert all(create.kind is SpanKind.PRODUCER for create in creates)
    assert send.kind is SpanKind.CLIENT
    assert send.attributes is not None
    assert send.attributes["messaging.batch.message_count"] == 3
    assert sorted(links_to(send)) == sorted(create.context.span_id for create in creates)
    parents = sorted(process.parent.span_id for process in processes if process.parent is not None)
    assert parents == sorted(create.context.span_id for create in creates)
    assert all(create.attributes and "messaging.message.id" in create.attributes for create in creates)


def test_a_job_enqueued_by_a_handler_continues_the_trace_and_the_correlation_id(otel: Capture) -> None:
    jobs, backend = _app()
    seen: dict[str, str | None] = {}

    @jobs.job("parent")
    def parent(payload: dict[str, str], job: Job) -> None:
        seen["parent"] = job.correlation_id
        jobs.enqueue("child", {})

    @jobs.job("child")
    def child(payload: dict[str, str], job: Job) -> None:
        seen["child"] = job.correlation_id
        seen["child via context"] = current_correlation_id()

    jobs.enqueue("parent", {})
    jobs.drain()

    processes = {
        span.attributes["cloudjobs.job.type"]: span
        for span in otel.spans(f"process {backend.name}")
        if span.attributes
    }
    sends = otel.spans(f"send {backend.name}")
    assert len({span.context.trace_id for span in [*processes.values(), *sends]}) == 1
    child_send = next(span for span in sends if span.parent is not None)
    assert child_send.parent is not None
    assert child_send.parent.span_id == processes["parent"].context.span_id
    assert seen["parent"] == seen["child"] == seen["child via context"]


def test_the_consumer_span_is_current_inside_sync_and_async_handlers(otel: Capture) -> None:
    jobs, backend = _app()
    current: dict[str, int] = {}

    @jobs.job("sync")
    def sync_handler(payload: dict[str, str]) -> None:
        current["sync"] = trace.get_current_span().get_span_context().span_id

    @jobs.job("async")
    async def async_handler(payload: dict[str, str]) -> None:
        await asyncio.sleep(0)
        current["async"] = trace.get_current_span().get_span_context().span_id

    jobs.enqueue("sync", {})
    jobs.enqueue("async", {})
    jobs.drain()

    spans = {
        span.attributes["cloudjobs.job.type"]: span
        for span in otel.spans(f"process {backend.name}")
        if span.attributes
    }
    assert current["sync"] == spans["sync"].context.span_id
    assert current["async"] == spans["async"].context.span_id
    assert not trace.get_current_span().get_span_context().is_valid


def test_a_failing_job_records_the_error_and_its_retries_and_dead_letter_as_events(otel: Capture) -> None:
    jobs, backend = _app()

    @jobs.job("flaky", max_attempts=2)
    def flaky(payload: dict[str, str]) -> None:
        raise RuntimeError("boom")

    jobs.enqueue("flaky", {})
    report = jobs.drain()

    assert report.retried == 1
    assert report.dead_lettered == 1
    first, second = otel.spans(f"process {backend.name}")
    for span in (first, second):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["error.type"] == "RuntimeError"
        assert next(event.name for event in span.events) == "exception"
    assert [event.name for event in first.events] == ["exception", "cloudjobs.job.retry"]
    assert [event.name for event in second.events] == ["exception", "cloudjobs.job.dead_letter"]
    assert first.attributes is not None
    assert second.attributes is not None
    assert first.attributes["cloudjobs.job.attempt"] == 1
    assert second.attributes["cloudjobs.job.attempt"] == 2
    assert second.events[1].attributes is not None
    assert second.events[1].attributes["cloudjobs.dead_letter.reason"] == "max_attempts"
    assert first.context.trace_id == second.context.trace_id


def test_a_permanent_error_goes_to_the_dead_letter_queue_with_its_class_as_error_type(otel: Capture) -> None:
    jobs, backend = _app()

    @jobs.job("doomed")
    def doomed(payload: dict[str, str]) -> None:
        raise PermanentError("no")

    jobs.enqueue("doomed", {})
    jobs.drain()

    span = otel.span(f"process {backend.name}")
    assert span.attributes is not None
    assert span.attributes["error.type"] == "cloudjobs.errors.PermanentError"
    assert span.attributes["cloudjobs.job.outcome"] == "dead_lettered"


def test_an_undecodable_message_still_gets_a_span_with_its_dead_letter_event(otel: Capture) -> None:
    jobs, backend = _app()
    backend.send(
        [
            OutgoingMessage(
                body="not json", attributes={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
            )
        ]
    )

    jobs.drain()

    span = otel.span(f"process {backend.name}")
    assert span.context.trace_id == int("1" * 32, 16)
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["cloudjobs.job.dead_letter"]


def test_disabled_telemetry_records_no_span_and_adds_no_trace_attributes(otel: Capture) -> None:
    backend = MemoryBackend(f"jobs-{uuid.uuid4().hex[:8]}")
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend)

    @jobs.job("quiet")
    def quiet(payload: dict[str, str]) -> None:
        assert current_job() is not None

    off = Telemetry(is_enabled=False)
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request"):
        Producer(backend, ManualClock(), telemetry=off).enqueue([EnqueueRequest("quiet", {})])
    [stored] = backend.messages()
    consumer = Consumer(registry=jobs.registry, settings=jobs.settings, queue=backend.info(), telemetry=off)
    report = drain(consumer, backend)

    assert report.completed == 1
    assert sorted(stored.attributes) == ["cloudjobs.correlation_id", "cloudjobs.id", "cloudjobs.type"]
    assert otel.spans(f"send {backend.name}") == []
    assert otel.spans(f"process {backend.name}") == []


def test_a_message_without_trace_context_starts_a_new_trace(otel: Capture) -> None:
    jobs, backend = _app()

    @jobs.job("plain")
    def plain(payload: dict[str, str]) -> None:
        pass

    Producer(backend, ManualClock(), telemetry=Telemetry(is_enabled=False)).enqueue(
        [EnqueueRequest("plain", {})]
    )
    jobs.drain()

    span = otel.span(f"process {backend.name}")
    assert span.parent is None
    assert span.links == ()
    assert span.context.trace_id != 0
    assert span.attributes is not None
    assert span.attributes["cloudjobs.job.outcome"] == "completed"


def test_without_an_sdk_trace_context_still_passes_through_a_job_to_the_jobs_it_enqueues() -> None:
    # A fresh interpreter: this process has the SDK installed by other tests.
    script = """
import json
from cloudjobs import CloudJobs, MemoryBackend, Settings
from cloudjobs.backends.base import OutgoingMessage
backend = MemoryBackend("pass-through")
jobs = CloudJobs(settings=Settings(_env_file=None, default_job_type="parent"), backend=backend)
@jobs.job("parent")
def parent(payload: dict) -> None:
    jobs.enqueue("child", {})
backend.send([OutgoingMessage(body="{}", attributes={
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "baggage": "tenant=acme"})])
jobs.drain(max_jobs=1)
[child] = backend.messages()
plain = MemoryBackend("plain")
jobs2 = CloudJobs(settings=Settings(_env_file=None), backend=plain)
jobs2.enqueue("anything", {})
[untraced] = plain.messages()
print(json.dumps([child.attributes, untraced.attributes]))
"""
    stdout = run_fresh(script)

    child, untraced = json.loads(stdout)
    assert child["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-")
    assert "tenant=acme" in child["baggage"]
    assert f"cloudjobs.correlation_id={child['cloudjobs.correlation_id']}" in child["baggage"]
    assert sorted(untraced) == ["cloudjobs.correlation_id", "cloudjobs.id", "cloudjobs.type"]


def test_without_an_sdk_logs_carry_the_received_trace_and_ambient_baggage_is_passed_on() -> None:
    # A fresh interpreter: this process has the SDK installed by other tests.
    script = """
import json, logging
from opentelemetry import baggage, context
from cloudjobs import CloudJobs, MemoryBackend, Settings
from cloudjobs.backends.base import OutgoingMessage
from cloudjobs.telemetry import JobLogFilter
records = []
class Collect(logging.Handler):
    def emit(self, record):
        records.append({"trace_id": record.trace_id, "correlation_id": record.correlation_id})
handler = Collect()
handler.addFilter(JobLogFilter())
logging.getLogger("handlers").addHandler(handler)
logging.getLogger("handlers").setLevel(logging.INFO)
backend = MemoryBackend("no-sdk")
jobs = CloudJobs(settings=Settings(_env_file=None, default_job_type="log"), backend=backend)
@jobs.job("log")
def log(payload: dict) -> None:
    logging.getLogger("handlers").info("handling")
backend.send([OutgoingMessage(body="{}", attributes={
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "cloudjobs.correlation_id": "request-7"})])
jobs.drain(max_jobs=1)
token = context.attach(baggage.set_baggage("tenant", "acme"))
jobs.enqueue("log", {})
context.detach(token)
[sent] = backend.messages()
print(json.dumps([records, sent.attributes]))
"""
    stdout = run_fresh(script)

    records, sent = json.loads(stdout)
    assert records == [{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "correlation_id": "request-7"}]
    assert "traceparent" not in sent
    assert "tenant=acme" in sent["baggage"]
    assert f"cloudjobs.correlation_id={sent['cloudjobs.correlation_id']}" in sent["baggage"]


def test_an_sdk_installed_after_the_first_jobs_starts_recording_metrics_then_spans() -> None:
    # A fresh interpreter: the SDK's providers are installed mid-way, as an application may.
    script = """
import json
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from cloudjobs import CloudJobs, MemoryBackend, Settings
backend = MemoryBackend("late")
jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend)
@jobs.job("noop")
def noop(payload: dict) -> None:
    pass
def run():
    jobs.enqueue("noop", {})
    [message] = backend.messages()
    assert jobs.drain().completed == 1
    return sorted(message.attributes)
def counts(reader):
    found = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name in ("cloudjobs.jobs.enqueued", "cloudjobs.jobs.succeeded"):
                    found[metric.name] = sum(point.value for point in metric.data.data_points)
    return found
before = run()
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
metered = run()
metered_counts = counts(reader)
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
traced = run()
print(json.dumps({
    "before": before, "metered": metered, "metered counts": metered_counts, "traced": traced,
    "traced counts": counts(reader), "spans": [span.name for span in exporter.get_finished_spans()],
}))
"""
    stdout = run_fresh(script)

    result = json.loads(stdout)
    assert "traceparent" not in result["before"]
    assert result["metered counts"] == {"cloudjobs.jobs.enqueued": 1, "cloudjobs.jobs.succeeded": 1}
    assert "traceparent" not in result["metered"]
    assert "traceparent" in result["traced"]
    assert result["traced counts"] == {"cloudjobs.jobs.enqueued": 2, "cloudjobs.jobs.succeeded": 2}
    assert result["spans"] == ["send late", "process late"]


def test_a_run_trace_is_skipped_only_when_it_would_do_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    plain = Delivery("m", "r", "{}", {"cloudjobs.type": "t", "cloudjobs.id": "i"}, 1, now, "q")
    traced = Delivery(
        "m",
        "r",
        "{}",
        {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        1,
        now,
        "q",
    )
    xray = Delivery(
        "m",
        "r",
        "{}",
        {},
        1,
        now,
        "q",
        system_attributes={"AWSTraceHeader": "Root=1-5759e988-bd862e3fe1be46a994272793"},
    )
    tracing, metering = [False], [False]
    monkeypatch.setattr(providers, "is_tracing", lambda: tracing[0])
    monkeypatch.setattr(providers, "is_metering", lambda: metering[0])
    enabled, disabled = Telemetry(), Telemetry(is_enabled=False)

    assert is_idle(enabled, plain)
    assert not is_idle(enabled, traced)  # its context is passed on to the jobs it enqueues
    assert not is_idle(enabled, xray)
    assert is_idle(disabled, traced)
    metering[0] = True
    assert not is_idle(enabled, plain)
    assert is_idle(disabled, plain)
    metering[0], tracing[0] = False, True
    assert not is_idle(enabled, plain)
    assert is_idle(disabled, plain)


def test_a_consumer_asks_the_providers_once_a_batch_and_sees_one_installed_from_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked, tracing = [0], [False]

    def is_tracing() -> bool:
        asked[0] += 1
        return tracing[0]

    monkeypatch.setattr(providers, "is_tracing", is_tracing)
    monkeypatch.setattr(providers, "is_metering", lambda: False)
    started: list[str] = []
    start = Telemetry.start

    def recording(self: Telemetry, run: Run) -> RunTrace:
        started.append(run.delivery.message_id)
        return start(self, run)

    # Replaced on the class itself: the consumer still takes it for the default, which may skip.
    monkeypatch.setattr(Telemetry, "start", recording)
    jobs, _ = _app()

    @jobs.job("noop")
    def noop(payload: dict[str, int]) -> None:
        pass

    jobs.enqueue_many([("noop", {"n": n}) for n in range(10)])
    asked[0] = 0  # the producer asks too
    assert jobs.drain().completed == 10  # one received batch of ten, no SDK: no trace
    assert (asked[0], started) == (1, [])

    tracing[0] = True  # an SDK installed between batches
    jobs.enqueue_many([("noop", {"n": n}) for n in range(3)])
    assert jobs.drain().completed == 3
    assert len(started) == 3


def test_a_failing_provider_check_fails_the_batchs_runs_not_the_consumer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs, _ = _app()
    ran: list[int] = []

    @jobs.job("noop")
    def noop(payload: dict[str, int]) -> None:
        ran.append(payload["n"])

    jobs.enqueue_many([("noop", {"n": n}) for n in range(3)])

    def broken() -> bool:
        raise RuntimeError("the provider cannot be read")

    monkeypatch.setattr(providers, "is_tracing", broken)
    report = jobs.drain(max_jobs=3)  # begin_batch never raises; each run asks again, in its pipeline

    assert ran == []
    assert [type(outcome) for _, outcome in report.outcomes] == [Retry] * 3


def test_a_telemetry_subclass_is_started_for_every_run_even_when_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(providers, "is_tracing", lambda: False)
    monkeypatch.setattr(providers, "is_metering", lambda: False)
    started: list[str] = []

    class Counting(Telemetry):
        def start(self, run: Run) -> RunTrace:
            started.append(run.delivery.message_id)
            return super().start(run)

    backend = MemoryBackend(f"jobs-{uuid.uuid4().hex[:8]}")
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend, telemetry=Counting())

    @jobs.job("noop")
    def noop(payload: dict[str, int]) -> None:
        pass

    jobs.enqueue_many([("noop", {"n": 1}), ("noop", {"n": 2})])

    assert jobs.drain().completed == 2
    assert len(started) == 2


def test_without_an_sdk_a_lambda_batch_passes_each_records_own_context_to_its_children() -> None:
    """Records without context skip the trace; those between them keep their own trace and baggage."""
    # A fresh interpreter: this process has the SDK installed by other tests.
    script = """
import json
from datetime import timedelta
from opentelemetry import baggage, trace
from cloudjobs import CloudJobs, MemoryBackend, Settings, current_job
from cloudjobs.backends.base import OutgoingMessage
from tests.unit.test_aws_lambda import FakeContext, event_of, receive_all
backend = MemoryBackend("mixed")
children = MemoryBackend("children")
jobs = CloudJobs(settings=Settings(_env_file=None, default_job_type="parent"), backend=backend)
sender = CloudJobs(settings=Settings(_env_file=None), backend=children)
seen = []
@jobs.job("parent")
def parent(payload: dict) -> None:
    span = trace.get_current_span().get_span_context()
    seen.append([payload["n"], format(span.trace_id, "032x") if span.is_valid else None,
                 baggage.get_baggage("tenant"), current_job().correlation_id])
    sender.enqueue("child", {"n": payload["n"]})
def parent_of(n, trace_id=None, tenant=None):
    attributes = {"cloudjobs.correlation_id": f"corr-{n}"}
    if trace_id:
        attributes["traceparent"] = f"00-{trace_id}-00f067aa0ba902b7-01"
    if tenant:
        attributes["baggage"] = f"tenant={tenant}"
    return OutgoingMessage(body=json.dumps({"n": n}), attributes=attributes)
backend.send([
    parent_of(1, "4bf92f3577b34da6a3ce929d0e0e4736", "acme"),
    parent_of(2),
    parent_of(3, "0af7651916cd43dd8448eb211c80319c"),
    parent_of(4),
])
handler = jobs.lambda_handler()
response = handler(event_of(receive_all(backend)), FakeContext())
handler.close()
sent = {json.loads(m.body)["payload"]["n"]: m.attributes for m in children.messages()}
print(json.dumps([response, seen, sent]))
"""
    stdout = run_fresh(script)

    response, seen, sent = json.loads(stdout)
    assert response == {"batchItemFailures": []}
    assert sorted(seen) == [
        [1, "4bf92f3577b34da6a3ce929d0e0e4736", "acme", "corr-1"],
        [2, None, None, "corr-2"],
        [3, "0af7651916cd43dd8448eb211c80319c", None, "corr-3"],
        [4, None, None, "corr-4"],
    ]
    assert sent["1"]["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-")
    assert "tenant=acme" in sent["1"]["baggage"]
    assert "traceparent" not in sent["2"]
    assert "tenant" not in sent["2"].get("baggage", "")
    assert sent["2"]["cloudjobs.correlation_id"] == "corr-2"
    assert sent["3"]["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-")
    assert "traceparent" not in sent["4"]
    assert sent["4"]["cloudjobs.correlation_id"] == "corr-4"

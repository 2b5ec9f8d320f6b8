"""One trace from enqueue to handle over HTTP against the moto server, with a real worker.

The SDK's in-memory span exporter and metric reader record what the producer and the worker did.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from cloudjobs import CloudJobs, Job, PermanentError, RetryableError, Settings
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.provisioning import ProvisionedQueue
from cloudjobs.runtimes.worker import Worker
from cloudjobs.telemetry import JobLogFilter
from tests.otel import Capture, links_to

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

DEADLINE = 30.0
W3C_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
W3C_PARENT_SPAN_ID = "00f067aa0ba902b7"
XRAY_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
XRAY_TRACE_ID = "5759e988bd862e3fe1be46a994272793"


def wait_for(condition: Callable[[], bool], *, message: str) -> None:
    """Poll ``condition`` until it holds; fail at the deadline."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {DEADLINE}s waiting for {message}")
        threading.Event().wait(0.02)


@contextlib.contextmanager
def running(jobs: CloudJobs, **options: Any) -> Iterator[Worker]:
    """A worker for ``jobs`` on a thread for the block; stopped and joined after."""
    worker = Worker(jobs, **options)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="tracing-worker")
    thread.start()
    try:
        wait_for(lambda: worker.started.is_set() or bool(errors), message="the worker to start")
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=DEADLINE)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


@pytest.fixture
def app(
    make_queue: Callable[..., ProvisionedQueue], make_backend: Callable[..., SqsBackend]
) -> Callable[..., tuple[CloudJobs, ProvisionedQueue]]:
    def make(**settings: Any) -> tuple[CloudJobs, ProvisionedQueue]:
        queue = make_queue(visibility_timeout_seconds=30, max_receive_count=5)
        options: dict[str, Any] = {
            "wait_time_seconds": 1,
            "shutdown_timeout_seconds": 10,
            "backoff_base_seconds": 0.01,
            "backoff_cap_seconds": 0.01,
            **settings,
        }
        jobs = CloudJobs(
            settings=Settings(_env_file=None, **options),
            backend=make_backend(queue_url=queue.queue_url),
            random=lambda: 0.0,
        )
        return jobs, queue

    return make


def _process_spans(otel: Capture, queue: ProvisionedQueue, expected: int) -> list[ReadableSpan]:
    name = f"process {queue.name}"
    wait_for(lambda: len(otel.spans(name)) >= expected, message=f"{expected} {name!r} spans")
    return otel.spans(name)


def test_producer_and_consumer_spans_share_one_trace_over_sqs(
    otel: Capture, app: Callable[..., tuple[CloudJobs, ProvisionedQueue]]
) -> None:
    jobs, queue = app()

    @jobs.job("greet")
    def greet(payload: dict[str, str]) -> None:
        pass

    with running(jobs):
        job_id = jobs.enqueue("greet", {"name": "Ada"})
        [process] = _process_spans(otel, queue, 1)

    send = otel.span(f"send {queue.name}")
    assert send.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == send.context.trace_id
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert links_to(process) == [send.context.span_id]
    assert send.attributes is not None
    assert process.attributes is not None
    assert process.attributes["messaging.system"] == "aws_sqs"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.destination.name"] == queue.name
    assert process.attributes["aws.sqs.queue.url"] == queue.queue_url
    assert process.attributes["messaging.message.id"] == send.attributes["messaging.message.id"]
    assert process.attributes["cloudjobs.job.id"] == job_id
    assert process.attributes["cloudjobs.job.type"] == "greet"
    assert process.attributes["cloudjobs.job.attempt"] == 1
    assert send.attributes["aws.sqs.queue.url"] == queue.queue_url


def test_a_job_enqueued_in_a_handler_continues_the_trace_and_correlation_and_its_logs_carry_them(
    otel: Capture, app: Callable[..., tuple[CloudJobs, ProvisionedQueue]]
) -> None:
    jobs, queue = app()
    records: list[logging.LogRecord] = []
    correlation: dict[str, str] = {}

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    handler.addFilter(JobLogFilter())
    logger = logging.getLogger("tests.tracing")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    @jobs.job("parent")
    def parent(payload: dict[str, str], job: Job) -> None:
        correlation["parent"] = job.correlation_id
        logger.info("parent running")
        jobs.enqueue("child", {})

    @jobs.job("child")
    def child(payload: dict[str, str], job: Job) -> None:
        correlation["child"] = job.correlation_id
        logger.info("child running")

    try:
        with running(jobs):
            jobs.enqueue("parent", {})
            spans = _process_spans(otel, queue, 2)
    finally:
        logger.removeHandler(handler)

    by_type = {span.attributes["cloudjobs.job.type"]: span for span in spans if span.attributes}
    assert by_type["parent"].context.trace_id == by_type["child"].context.trace_id
    child_send = next(span for span in otel.spans(f"send {queue.name}") if span.parent is not None)
    assert child_send.parent is not None
    assert child_send.parent.span_id == by_type["parent"].context.span_id
    assert by_type["child"].parent is not None
    assert by_type["child"].parent.span_id == child_send.context.span_id
    assert correlation["parent"] == correlation["child"]
    assert len(records) == 2
    for record, job_type in zip(records, ("parent", "child"), strict=True):
        span = by_type[job_type]
        assert span.attributes is not None
        assert record.__dict__["job_id"] == span.attributes["cloudjobs.job.id"]
        assert record.__dict__["job_type"] == job_type
        assert record.__dict__["correlation_id"] == correlation["parent"]
        assert record.__dict__["trace_id"] == format(span.context.trace_id, "032x")


@pytest.mark.parametrize("attribute_name", ["traceparent", "Traceparent"])
def test_a_plain_boto3_message_with_a_traceparent_is_handled_in_the_senders_trace(
    otel: Capture,
    app: Callable[..., tuple[CloudJobs, ProvisionedQueue]],
    sqs_client: SQSClient,
    attribute_name: str,
) -> None:
    jobs, queue = app(default_job_type="foreign")
    received: list[object] = []

    @jobs.job("foreign")
    def foreign(payload: dict[str, int]) -> None:
        received.append(payload)

    sqs_client.send_message(
        QueueUrl=queue.queue_url,
        MessageBody=json.dumps({"order": 7}),
        MessageAttributes={
            attribute_name: {
                "DataType": "String",
                "StringValue": f"00-{W3C_TRACE_ID}-{W3C_PARENT_SPAN_ID}-01",
            },
            "baggage": {"DataType": "String", "StringValue": "tenant=acme"},
        },
    )
    with running(jobs):
        [process] = _process_spans(otel, queue, 1)

    assert received == [{"order": 7}]
    assert format(process.context.trace_id, "032x") == W3C_TRACE_ID
    assert process.parent is not None
    assert format(process.parent.span_id, "016x") == W3C_PARENT_SPAN_ID
    assert process.status.status_code is StatusCode.UNSET


def test_a_message_with_an_aws_trace_header_is_handled_in_that_xray_trace(
    otel: Capture,
    xray_propagation: None,
    app: Callable[..., tuple[CloudJobs, ProvisionedQueue]],
    sqs_client: SQSClient,
) -> None:
    jobs, queue = app(default_job_type="foreign")

    @jobs.job("foreign")
    def foreign(payload: dict[str, str]) -> None:
        pass

    # moto does not derive AWSTraceHeader from the HTTP header: set it as a system attribute.
    sqs_client.send_message(
        QueueUrl=queue.queue_url,
        MessageBody="{}",
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": XRAY_HEADER}},
    )
    with running(jobs):
        [process] = _process_spans(otel, queue, 1)

    assert format(process.context.trace_id, "032x") == XRAY_TRACE_ID
    assert process.parent is not None
    assert format(process.parent.span_id, "016x") == "53995c3f42cd8ad8"


@pytest.mark.parametrize("traceparent", [None, "00-not-a-trace-01", ""])
def test_a_malformed_or_absent_traceparent_starts_a_new_trace(
    otel: Capture,
    app: Callable[..., tuple[CloudJobs, ProvisionedQueue]],
    sqs_client: SQSClient,
    traceparent: str | None,
) -> None:
    jobs, queue = app(default_job_type="foreign")

    @jobs.job("foreign")
    def foreign(payload: dict[str, str]) -> None:
        pass

    attributes: dict[str, Any] = {}
    if traceparent:
        attributes["traceparent"] = {"DataType": "String", "StringValue": traceparent}
    sqs_client.send_message(QueueUrl=queue.queue_url, MessageBody="{}", MessageAttributes=attributes)
    with running(jobs):
        [process] = _process_spans(otel, queue, 1)

    assert process.parent is None
    assert process.context.trace_id != 0
    assert process.attributes is not None
    assert process.attributes["cloudjobs.job.outcome"] == "completed"


def test_failing_retried_and_dead_lettered_jobs_show_in_spans_counters_and_the_dlq_gauge(
    otel: Capture, app: Callable[..., tuple[CloudJobs, ProvisionedQueue]]
) -> None:
    jobs, queue = app()
    labels = {"messaging.destination.name": queue.name}

    @jobs.job("flaky", max_attempts=2)
    def flaky(payload: dict[str, str]) -> None:
        raise RetryableError("try later", delay=timedelta(0))

    @jobs.job("doomed")
    def doomed(payload: dict[str, str]) -> None:
        raise PermanentError("never")

    with running(jobs, queue_metrics_interval=timedelta(milliseconds=200)):
        jobs.enqueue_many([("flaky", {}), ("doomed", {})])
        spans = _process_spans(otel, queue, 3)
        # SQS counts are approximate and read at an interval: wait on the gauge with a deadline.
        wait_for(
            lambda: otel.value("cloudjobs.queue.dlq_depth", **labels) == 2,
            message="the DLQ depth gauge to report both dead-lettered jobs",
        )

    flaky_spans = [
        span for span in spans if span.attributes and span.attributes["cloudjobs.job.type"] == "flaky"
    ]
    [doomed_span] = [
        span for span in spans if span.attributes and span.attributes["cloudjobs.job.type"] == "doomed"
    ]
    assert [[event.name for event in span.events] for span in flaky_spans] == [
        ["exception", "cloudjobs.job.retry"],
        ["exception", "cloudjobs.job.dead_letter"],
    ]
    assert [event.name for event in doomed_span.events] == ["exception", "cloudjobs.job.dead_letter"]
    assert all(span.status.status_code is StatusCode.ERROR for span in spans)
    assert otel.value("cloudjobs.jobs.failed", **labels) == 3
    assert otel.value("cloudjobs.jobs.retried", **labels, **{"cloudjobs.job.type": "flaky"}) == 1
    assert otel.value("cloudjobs.jobs.dead_lettered", **labels, **{"cloudjobs.job.type": "flaky"}) == 1
    assert otel.value("cloudjobs.jobs.dead_lettered", **labels, **{"cloudjobs.job.type": "doomed"}) == 1
    assert otel.value("cloudjobs.queue.depth", **labels) == 0

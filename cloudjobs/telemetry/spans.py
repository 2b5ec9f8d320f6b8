"""Spans (and the job metrics recorded beside them) for enqueues and job runs.

Spans follow the OpenTelemetry messaging semantic conventions **v1.44.0** for SQS
(:data:`SEMCONV_VERSION`; the conventions are in development and rename attributes between
versions, so this one is pinned and named in the tracer's schema URL):

- one enqueued job: a PRODUCER span ``send <queue>`` whose context the message carries;
- several (``enqueue_many``): a PRODUCER span ``create <queue>`` per message, whose context that
  message carries, and a CLIENT span ``send <queue>`` per SendMessageBatch, linked to the create
  spans of its messages, with ``messaging.batch.message_count``;
- each handled job: a CONSUMER span ``process <queue>``, child of the producer's context (so one
  trace runs from enqueue to handle) and linked to it; it is the current span while the handler
  runs, with the correlation id in baggage. Failures are recorded on it with status ERROR; retries,
  deferrals and dead-lettering are span events.

With no SDK installed the API's no-op tracer makes this close to free: attributes are only built
for recording spans. Trace context still passes through (a job enqueued by a handler carries the
trace it was received with).
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final

from opentelemetry import baggage, context, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from cloudjobs.backends.base import Delivery, QueueInfo, SendResult
from cloudjobs.outcomes import Cancelled, Completed, DeadLetter, Deferred, Outcome, Released, Retry
from cloudjobs.telemetry import propagation
from cloudjobs.telemetry.metrics import (
    DESTINATION_KEY,
    ERROR_TYPE_KEY,
    JOB_TYPE_KEY,
    REASON_KEY,
    JobMetrics,
    job_metrics,
)

if TYPE_CHECKING:
    from cloudjobs.envelope import Envelope
    from cloudjobs.job import Job

SEMCONV_VERSION: Final = "1.44.0"
"""The version of the OpenTelemetry semantic conventions the spans follow."""
SCHEMA_URL: Final = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
TRACER_NAME: Final = "cloudjobs"

# Semantic-convention attribute names (v1.44.0).
MESSAGING_SYSTEM: Final = "messaging.system"
MESSAGING_OPERATION_TYPE: Final = "messaging.operation.type"
MESSAGING_OPERATION_NAME: Final = "messaging.operation.name"
MESSAGING_DESTINATION_NAME: Final = DESTINATION_KEY
MESSAGING_MESSAGE_ID: Final = "messaging.message.id"
MESSAGING_CONVERSATION_ID: Final = "messaging.message.conversation_id"
MESSAGING_BATCH_MESSAGE_COUNT: Final = "messaging.batch.message_count"
AWS_SQS_QUEUE_URL: Final = "aws.sqs.queue.url"
ERROR_TYPE: Final = ERROR_TYPE_KEY
# cloudjobs' own attributes.
JOB_TYPE: Final = JOB_TYPE_KEY
JOB_ID: Final = "cloudjobs.job.id"
JOB_ATTEMPT: Final = "cloudjobs.job.attempt"
JOB_OUTCOME: Final = "cloudjobs.job.outcome"
# Span events.
RETRY_EVENT: Final = "cloudjobs.job.retry"
DEAD_LETTER_EVENT: Final = "cloudjobs.job.dead_letter"
DEFERRED_EVENT: Final = "cloudjobs.job.deferred"

_SQS: Final = "aws_sqs"


@functools.cache
def _tracer() -> trace.Tracer:
    # A proxy until an SDK provider is installed, then delegating to it: safe to cache.
    import cloudjobs

    return trace.get_tracer(TRACER_NAME, cloudjobs.__version__, schema_url=SCHEMA_URL)


def _queue_attributes(info: QueueInfo, operation_type: str, operation_name: str) -> dict[str, str]:
    attributes = {
        MESSAGING_SYSTEM: _SQS,
        MESSAGING_OPERATION_TYPE: operation_type,
        MESSAGING_OPERATION_NAME: operation_name,
        MESSAGING_DESTINATION_NAME: info.name,
    }
    if info.url.startswith(("https://", "http://")):
        attributes[AWS_SQS_QUEUE_URL] = info.url
    return attributes


class Telemetry:
    """Traces and measures enqueues and job runs; the producer and the consumer core call it.

    Args:
        is_enabled: False turns every span, metric and injection off (the message then carries no
            trace context, and correlation ids are not mirrored in baggage). For benchmarks and for
            deployments that want none of it.
    """

    def __init__(self, *, is_enabled: bool = True) -> None:
        self.is_enabled = is_enabled

    def start_enqueue(self, info: QueueInfo, count: int) -> EnqueueTrace:
        """Begin tracing one producer call of ``count`` messages to ``info``'s queue."""
        return EnqueueTrace(info, count, is_enabled=self.is_enabled)

    def start_run(self, delivery: Delivery, info: QueueInfo) -> RunTrace:
        """Begin tracing one delivery: extract its context and start its CONSUMER span."""
        return RunTrace(delivery, info, is_enabled=self.is_enabled)


@functools.cache
def default_telemetry() -> Telemetry:
    """The telemetry used when a producer or consumer is given none: on, through the global providers."""
    return Telemetry()


class EnqueueTrace:
    """The spans of one producer call: see the module docstring."""

    def __init__(self, info: QueueInfo, count: int, *, is_enabled: bool) -> None:
        self._info = info
        self._is_enabled = is_enabled
        self._is_batch = count > 1
        self._creations: dict[int, Span] = {}
        self._job_types: dict[int, str] = {}
        self._send: Span | None = None
        self._is_recording = False
        # Without a tracer provider (no SDK installed) no span is started: context is only passed on.
        self._is_traced = is_enabled and _has_tracer_provider()
        if self._is_traced and not self._is_batch:
            self._send = _tracer().start_span(f"send {info.name}", kind=SpanKind.PRODUCER)
            if self._send.is_recording():
                self._is_recording = True
                self._send.set_attributes(_queue_attributes(info, "send", "send"))

    def stamp(self, index: int, envelope: Envelope) -> tuple[dict[str, str], dict[str, str]]:
        """The trace attributes and system attributes for message ``index`` (its creation context)."""
        self._job_types[index] = envelope.type
        if not self._is_traced:
            if self._is_enabled and (
                trace.get_current_span().get_span_context().is_valid or baggage.get_all()
            ):
                return propagation.inject(context.get_current(), envelope.correlation_id)
            return {}, {}
        if self._send is not None:
            span = self._send
        else:
            span = _tracer().start_span(f"create {self._info.name}", kind=SpanKind.PRODUCER)
            self._creations[index] = span
            if span.is_recording():
                self._is_recording = True
                span.set_attributes(_queue_attributes(self._info, "create", "create"))
        if not span.is_recording():
            # No SDK (or sampled out): pass on what there is, if anything. With nothing, skipping
            # the propagators keeps this close to free; the envelope carries the correlation id.
            if span.get_span_context().is_valid or baggage.get_all():
                return propagation.inject(trace.set_span_in_context(span), envelope.correlation_id)
            return {}, {}
        if span.is_recording():
            span.set_attributes(
                {
                    JOB_TYPE: envelope.type,
                    JOB_ID: envelope.id,
                    MESSAGING_CONVERSATION_ID: envelope.correlation_id,
                }
            )
        return propagation.inject(trace.set_span_in_context(span), envelope.correlation_id)

    def record_batch(self, indices: Sequence[int], results: Sequence[SendResult]) -> None:
        """Record one SendMessageBatch of messages ``indices`` and its per-entry results."""
        if not self._is_enabled:
            return
        if not self._is_recording:
            for index, result in zip(indices, results, strict=True):
                if result.is_sent:
                    job_metrics().enqueued.add(
                        1, {JOB_TYPE_KEY: self._job_types.get(index, ""), DESTINATION_KEY: self._info.name}
                    )
            return
        send = self._send
        if send is None:
            links = [Link(self._creations[index].get_span_context()) for index in indices]
            send = _tracer().start_span(f"send {self._info.name}", kind=SpanKind.CLIENT, links=links)
            if send.is_recording():
                send.set_attributes(_queue_attributes(self._info, "send", "send"))
                send.set_attribute(MESSAGING_BATCH_MESSAGE_COUNT, len(indices))
        failed = 0
        for index, result in zip(indices, results, strict=True):
            span = self._creations.get(index, send)
            if result.is_sent:
                if span.is_recording():
                    span.set_attribute(MESSAGING_MESSAGE_ID, result.message_id or "")
                job_metrics().enqueued.add(
                    1, {JOB_TYPE_KEY: self._job_types.get(index, ""), DESTINATION_KEY: self._info.name}
                )
            else:
                failed += 1
                if span.is_recording():
                    span.add_event(
                        "cloudjobs.send_failed", {"error": result.error or "", "retryable": result.retryable}
                    )
        if send is not self._send:
            if failed:
                send.set_status(Status(StatusCode.ERROR, f"{failed} of {len(indices)} entries failed"))
            send.end()

    def finish(self, error: BaseException | None = None) -> None:
        """End every span of this call; ``error`` when the call raised."""
        if not self._is_enabled:
            return
        spans = list(self._creations.values())
        if self._send is not None:
            spans.append(self._send)
        for span in spans:
            if error is not None and span.is_recording():
                span.record_exception(error)
                span.set_attribute(ERROR_TYPE, _error_type(error))
                span.set_status(Status(StatusCode.ERROR, str(error)))
            span.end()


class RunTrace:
    """The CONSUMER span of one delivery, and the metrics of its run."""

    __slots__ = (
        "_attributes",
        "_context",
        "_is_enabled",
        "_is_finished",
        "_job",
        "_queue",
        "_span",
        "_started",
        "_token",
    )

    def __init__(self, delivery: Delivery, info: QueueInfo, *, is_enabled: bool) -> None:
        self._is_enabled = is_enabled
        self._is_finished = False
        self._queue = info.name
        self._job: Job | None = None
        self._attributes = {DESTINATION_KEY: info.name}
        self._started = 0.0
        self._token: contextvars.Token[context.Context] | None = None
        self._context: context.Context | None = None
        self._span: Span = trace.INVALID_SPAN
        if not is_enabled:
            return
        carries_context = propagation.carries_context(delivery.attributes, delivery.system_attributes)
        if not _has_tracer_provider():
            # No SDK: no span. Context the message carries is still passed on to the jobs it enqueues.
            if carries_context:
                self._context = propagation.extract(delivery.attributes, delivery.system_attributes)
            return
        parent: context.Context | None = None
        links: list[Link] | None = None
        if carries_context:
            parent = propagation.extract(delivery.attributes, delivery.system_attributes)
            parent_span_context = trace.get_current_span(parent).get_span_context()
            if parent_span_context.is_valid:
                links = [Link(parent_span_context)]
        span = self._span = _tracer().start_span(
            f"process {info.name}", context=parent, kind=SpanKind.CONSUMER, links=links
        )
        if span.is_recording():
            span.set_attributes(_queue_attributes(info, "process", "process"))
            span.set_attribute(MESSAGING_MESSAGE_ID, delivery.message_id)
        elif not span.get_span_context().is_valid and not (parent is not None and baggage.get_all(parent)):
            # No SDK and no context to pass on: nothing to make current, which keeps this cheap.
            return
        self._context = trace.set_span_in_context(span, parent)

    @property
    def span(self) -> Span:
        """The CONSUMER span (a non-recording one when tracing is off or no SDK is installed)."""
        return self._span

    def identify(self, job: Job) -> None:
        """Name the job the delivery turned out to be (once decoded and validated)."""
        self._job = job
        self._attributes = {JOB_TYPE_KEY: job.type, DESTINATION_KEY: self._queue}
        if self._context is None:
            return
        self._context = baggage.set_baggage(
            propagation.CORRELATION_BAGGAGE_KEY, job.correlation_id, self._context
        )
        if self._span.is_recording():
            self._span.set_attributes(
                {
                    JOB_TYPE: job.type,
                    JOB_ID: job.id,
                    JOB_ATTEMPT: job.attempt,
                    MESSAGING_CONVERSATION_ID: job.correlation_id,
                }
            )

    def __enter__(self) -> RunTrace:
        """Make the span (and the job's correlation id) current for the handler call."""
        if self._is_enabled:
            if self._context is not None:
                self._token = context.attach(self._context)
            # The job's correlation id is current through current_job(): no context variable to set.
            if self._job is not None and self._job.attempt == 1:
                lag = (datetime.now(self._job.enqueued_at.tzinfo) - self._job.enqueued_at).total_seconds()
                job_metrics().queue_lag.record(max(lag, 0.0), self._attributes)
            job_metrics().in_flight.add(1, self._attributes)
            self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._is_enabled:
            return
        metrics = job_metrics()
        metrics.duration.record(time.perf_counter() - self._started, self._attributes)
        metrics.in_flight.add(-1, self._attributes)
        if self._token is not None:
            context.detach(self._token)
            self._token = None

    def finish(self, outcome: Outcome, error: BaseException | None = None) -> None:
        """Record the outcome (events, status, counters) and end the span; later calls do nothing."""
        if self._is_finished or not self._is_enabled:
            return
        self._is_finished = True
        _record_outcome(job_metrics(), self._span, self._attributes, outcome, error)
        self._span.end()


def _record_outcome(
    metrics: JobMetrics,
    span: Span,
    attributes: dict[str, str],
    outcome: Outcome,
    error: BaseException | None,
) -> None:
    is_recording = span.is_recording()
    if error is not None:
        metrics.failed.add(1, {**attributes, ERROR_TYPE_KEY: _error_type(error)})
        if is_recording:
            span.record_exception(error)
            span.set_attribute(ERROR_TYPE, _error_type(error))
            span.set_status(Status(StatusCode.ERROR, str(error) or type(error).__name__))
    match outcome:
        case Completed():
            if error is None:
                metrics.succeeded.add(1, attributes)
            kind = "completed"
        case Retry(delay=delay, error=description, attempt=attempt):
            metrics.retried.add(1, attributes)
            kind = "retried"
            if is_recording:
                span.add_event(
                    RETRY_EVENT,
                    {
                        JOB_ATTEMPT: attempt,
                        "cloudjobs.retry.delay_seconds": delay.total_seconds(),
                        "error": description,
                    },
                )
                if error is None:
                    span.set_status(Status(StatusCode.ERROR, description))
        case DeadLetter(reason=reason, error=description, attempt=attempt, job_type=job_type):
            dead_letter_attributes = dict(attributes)
            if job_type is not None:
                dead_letter_attributes[JOB_TYPE_KEY] = job_type
            metrics.dead_lettered.add(1, {**dead_letter_attributes, REASON_KEY: reason})
            kind = "dead_lettered"
            if is_recording:
                span.add_event(
                    DEAD_LETTER_EVENT, {REASON_KEY: reason, JOB_ATTEMPT: attempt, "error": description}
                )
                if error is None:
                    span.set_attribute(ERROR_TYPE, reason)
                    span.set_status(Status(StatusCode.ERROR, description))
        case Deferred(delay=delay, reason=reason):
            kind = "deferred"
            if is_recording:
                span.add_event(
                    DEFERRED_EVENT, {"reason": reason, "cloudjobs.retry.delay_seconds": delay.total_seconds()}
                )
        case Released():
            kind = "released"
        case Cancelled():
            kind = "cancelled"
    if is_recording:
        span.set_attribute(JOB_OUTCOME, kind)


def _has_tracer_provider() -> bool:
    """Whether a tracer provider (an SDK) is installed: without one no span is started at all."""
    global _tracer_provider_seen
    if _tracer_provider_seen:
        return True
    # The API lets a provider be installed once and never removed: a positive answer is final.
    _tracer_provider_seen = not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )
    return _tracer_provider_seen


_tracer_provider_seen = False


def _error_type(error: BaseException) -> str:
    # The conventions ask for the fully-qualified class name.
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"

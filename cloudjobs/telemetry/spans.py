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

With no SDK installed (see :mod:`cloudjobs.telemetry.providers`) no span is started and no metric
recorded: no names or attribute dicts are built for the API's no-ops. Trace context and baggage
still pass through the configured propagators (a job enqueued by a handler carries the trace it was
received with), and the correlation id travels in the envelope whatever is installed. Tracing and
metering are told apart: a meter provider alone (e.g. the worker's Prometheus endpoint) gets its
metrics without spans being started.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final

from opentelemetry import baggage, context, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from cloudjobs.backends.base import Delivery, QueueInfo, SendResult
from cloudjobs.middleware import RunHandle
from cloudjobs.outcomes import Cancelled, Completed, DeadLetter, Deferred, Outcome, Released, Retry
from cloudjobs.telemetry import propagation, providers
from cloudjobs.telemetry.metrics import (
    DESTINATION_KEY,
    ERROR_TYPE_KEY,
    JOB_TYPE_KEY,
    REASON_KEY,
    JobMetrics,
    job_metrics,
)
from cloudjobs.telemetry.switch import Telemetry, default_telemetry, is_idle

__all__ = [
    "SEMCONV_VERSION",
    "EnqueueTrace",
    "RunTrace",
    "Telemetry",
    "default_telemetry",
    "is_idle",
]

if TYPE_CHECKING:
    from cloudjobs.envelope import Envelope
    from cloudjobs.job import Job
    from cloudjobs.run import Run

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


def _queue_attributes(info: QueueInfo, operation: str) -> Mapping[str, str]:
    """A span's queue attributes for ``operation`` (its type and name alike); shared: do not change."""
    return _queue_attributes_of(info.name, info.url, operation)


@functools.lru_cache(maxsize=256)
def _queue_attributes_of(name: str, url: str, operation: str) -> Mapping[str, str]:
    attributes = {
        MESSAGING_SYSTEM: _SQS,
        MESSAGING_OPERATION_TYPE: operation,
        MESSAGING_OPERATION_NAME: operation,
        MESSAGING_DESTINATION_NAME: name,
    }
    if url.startswith(("https://", "http://")):
        attributes[AWS_SQS_QUEUE_URL] = url
    return attributes


@functools.lru_cache(maxsize=1024)
def _job_attributes(job_type: str | None, queue: str) -> Mapping[str, str]:
    """A job metric's attributes (no job type before one is known); built once per job type and
    queue, shared: do not change. Bounded: a foreign sender's job type attribute may be anything.
    """
    if job_type is None:
        return {DESTINATION_KEY: queue}
    return {JOB_TYPE_KEY: job_type, DESTINATION_KEY: queue}


def _pass_on(correlation_id: str) -> tuple[dict[str, str], dict[str, str]]:
    """What an untraced message carries: the ambient trace context and baggage, if there are any."""
    current = context.get_current()
    # An empty context holds neither span nor baggage: skipping the propagators keeps this free.
    if current and (trace.get_current_span(current).get_span_context().is_valid or baggage.get_all(current)):
        return propagation.inject(current, correlation_id)
    return {}, {}


class EnqueueTrace:
    """The spans of one producer call: see the module docstring."""

    __slots__ = (
        "_creations",
        "_info",
        "_is_batch",
        "_is_enabled",
        "_is_metered",
        "_is_recording",
        "_is_traced",
        "_job_types",
        "_send",
    )

    def __init__(self, info: QueueInfo, count: int, *, is_enabled: bool, is_traced: bool = True) -> None:
        self._info = info
        self._is_enabled = is_enabled
        self._is_batch = count > 1
        self._creations: dict[int, Span] = {}
        self._job_types: dict[int, str] = {}
        self._send: Span | None = None
        self._is_recording = False
        # Without a tracer provider (no SDK installed) no span is started: context is only passed on.
        self._is_traced = is_traced and is_enabled and providers.is_tracing()
        self._is_metered = is_enabled and providers.is_metering()
        if self._is_traced and not self._is_batch:
            self._send = _tracer().start_span(
                f"send {info.name}", kind=SpanKind.PRODUCER, attributes=_queue_attributes(info, "send")
            )
            self._is_recording = self._send.is_recording()

    def stamp(self, index: int, envelope: Envelope) -> tuple[dict[str, str], dict[str, str]]:
        """The trace attributes and system attributes for message ``index`` (its creation context)."""
        if self._is_metered:
            self._job_types[index] = envelope.type
        if not self._is_traced:
            return _pass_on(envelope.correlation_id) if self._is_enabled else ({}, {})
        if self._send is not None:
            span = self._send
        else:
            span = _tracer().start_span(
                f"create {self._info.name}",
                kind=SpanKind.PRODUCER,
                attributes=_queue_attributes(self._info, "create"),
            )
            self._creations[index] = span
        if not span.is_recording():
            # Sampled out: pass on what there is, if anything. With nothing, skipping the
            # propagators keeps this close to free; the envelope carries the correlation id.
            if span.get_span_context().is_valid or baggage.get_all():
                return propagation.inject(trace.set_span_in_context(span), envelope.correlation_id)
            return {}, {}
        self._is_recording = True
        span.set_attributes(
            {
                JOB_TYPE: envelope.type,
                JOB_ID: envelope.id,
                MESSAGING_CONVERSATION_ID: envelope.correlation_id,
            }
        )
        return propagation.inject(trace.set_span_in_context(span), envelope.correlation_id)

    def adopt(self, index: int, envelope: Envelope) -> None:
        """Count message ``index``, stamped by an earlier call, under its job type (no span: its
        trace context is the one it was stamped with)."""
        if self._is_metered:
            self._job_types[index] = envelope.type

    def record_batch(self, indices: Sequence[int], results: Sequence[SendResult]) -> None:
        """Record one SendMessageBatch of messages ``indices`` and its per-entry results."""
        if self._is_metered:
            enqueued = job_metrics().enqueued
            for index, result in zip(indices, results, strict=True):
                if result.is_sent:
                    enqueued.add(1, _job_attributes(self._job_types.get(index, ""), self._info.name))
        if not self._is_recording:
            return
        send = self._send
        if send is None:
            links = [Link(self._creations[index].get_span_context()) for index in indices]
            send = _tracer().start_span(
                f"send {self._info.name}",
                kind=SpanKind.CLIENT,
                links=links,
                attributes={
                    **_queue_attributes(self._info, "send"),
                    MESSAGING_BATCH_MESSAGE_COUNT: len(indices),
                },
            )
        failed = 0
        for index, result in zip(indices, results, strict=True):
            span = self._creations.get(index, send)
            if result.is_sent:
                if span.is_recording():
                    span.set_attribute(MESSAGING_MESSAGE_ID, result.message_id or "")
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
        if not self._is_traced:
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


class RunTrace(RunHandle):
    """The CONSUMER span of one delivery, and the metrics of its run: the telemetry middleware's
    handle, started as the delivery arrives and settled after every other middleware."""

    wraps_call = True

    __slots__ = (
        "_attributes",
        "_context",
        "_is_enabled",
        "_is_finished",
        "_is_metered",
        "_job",
        "_queue",
        "_span",
        "_started",
        "_token",
    )

    def __init__(self, delivery: Delivery, info: QueueInfo, *, is_enabled: bool) -> None:
        self._is_enabled = is_enabled
        self._is_metered = is_enabled and providers.is_metering()
        self._is_finished = False
        self._queue = info.name
        self._job: Job | None = None
        self._attributes = _job_attributes(None, info.name) if self._is_metered else _NO_ATTRIBUTES
        self._started = 0.0
        self._token: contextvars.Token[context.Context] | None = None
        self._context: context.Context | None = None
        self._span: Span = trace.INVALID_SPAN
        if not is_enabled:
            return
        carries_context = propagation.carries_context(delivery.attributes, delivery.system_attributes)
        if not providers.is_tracing():
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
            f"process {info.name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={**_queue_attributes(info, "process"), MESSAGING_MESSAGE_ID: delivery.message_id},
        )
        if (
            not span.is_recording()
            and not span.get_span_context().is_valid
            and not (parent is not None and baggage.get_all(parent))
        ):
            # Sampled out with no context to pass on: nothing to make current, which keeps this cheap.
            return
        self._context = trace.set_span_in_context(span, parent)

    @property
    def span(self) -> Span:
        """The CONSUMER span (a non-recording one when tracing is off or no SDK is installed)."""
        return self._span

    def identify(self, job: Job) -> None:
        """Name the job the delivery turned out to be (once decoded and validated)."""
        self._job = job
        if self._is_metered:
            self._attributes = _job_attributes(job.type, self._queue)
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
        if self._context is not None:
            self._token = context.attach(self._context)
        # The job's correlation id is current through current_job(): no context variable to set.
        if self._is_metered:
            if self._job is not None and self._job.attempt == 1:
                lag = (datetime.now(self._job.enqueued_at.tzinfo) - self._job.enqueued_at).total_seconds()
                job_metrics().queue_lag.record(max(lag, 0.0), self._attributes)
            job_metrics().in_flight.add(1, self._attributes)
            self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._is_metered:
            metrics = job_metrics()
            metrics.duration.record(time.perf_counter() - self._started, self._attributes)
            metrics.in_flight.add(-1, self._attributes)
        if self._token is not None:
            context.detach(self._token)
            self._token = None

    def before_run(self, run: Run) -> None:
        """Name the job once the delivery is prepared."""
        if run.prepared is not None:
            self.identify(run.prepared.job)

    def enter(self, run: Run) -> None:
        """Make the span current around the handler call."""
        self.__enter__()

    def exit(self, run: Run) -> None:
        """The handler call ended: record its duration, detach the span."""
        self.__exit__()

    def settle(self, run: Run, outcome: Outcome) -> Outcome:
        """Record the outcome (and the handler's exception) and end the span."""
        self.finish(outcome, run.error)
        return outcome

    def finish(self, outcome: Outcome, error: BaseException | None = None) -> None:
        """Record the outcome (events, status, counters) and end the span; later calls do nothing."""
        if self._is_finished or not self._is_enabled:
            return
        self._is_finished = True
        if self._is_metered or self._span.is_recording():
            metrics = job_metrics() if self._is_metered else None
            _record_outcome(metrics, self._span, self._attributes, outcome, error)
        self._span.end()


_NO_ATTRIBUTES: Final[Mapping[str, str]] = {}


def _record_outcome(
    metrics: JobMetrics | None,
    span: Span,
    attributes: Mapping[str, str],
    outcome: Outcome,
    error: BaseException | None,
) -> None:
    """Count the outcome (``metrics`` None: not metered) and record it on ``span`` if it records."""
    is_recording = span.is_recording()
    if error is not None:
        if metrics is not None:
            metrics.failed.add(1, {**attributes, ERROR_TYPE_KEY: _error_type(error)})
        if is_recording:
            span.record_exception(error)
            span.set_attribute(ERROR_TYPE, _error_type(error))
            span.set_status(Status(StatusCode.ERROR, str(error) or type(error).__name__))
    match outcome:
        case Completed():
            if error is None and metrics is not None:
                metrics.succeeded.add(1, attributes)
            kind = "completed"
        case Retry(delay=delay, error=description, attempt=attempt):
            if metrics is not None:
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
            if metrics is not None:
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


def _error_type(error: BaseException) -> str:
    # The conventions ask for the fully-qualified class name.
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"

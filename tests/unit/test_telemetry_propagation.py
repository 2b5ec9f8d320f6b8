"""Trace context and correlation id in message attributes: inject, extract, precedence, budget."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    DefaultGetter,
    DefaultSetter,
    Getter,
    Setter,
    TextMapPropagator,
)

from cloudjobs import CloudJobs, ManualClock, MemoryBackend, Settings
from cloudjobs.backends.base import OutgoingMessage
from cloudjobs.telemetry import CORRELATION_BAGGAGE_KEY, correlation_scope, current_correlation_id
from cloudjobs.telemetry.propagation import (
    correlation_id_for_enqueue,
    extract,
    fit_attributes,
    has_trace_parent,
    inject,
    merge_attributes,
)
from tests.otel import Capture

W3C_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
W3C_PARENT = f"00-{W3C_TRACE_ID}-00f067aa0ba902b7-01"
XRAY_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
XRAY_TRACE_ID = "5759e988bd862e3fe1be46a994272793"


def _trace_id(ctx: Context) -> str:
    return format(trace.get_current_span(ctx).get_span_context().trace_id, "032x")


def test_injected_context_and_correlation_id_come_back_out(otel: Capture) -> None:
    with trace.get_tracer("test").start_as_current_span("request") as span:
        attributes, system_attributes = inject(context.get_current(), "corr-1")

    extracted = extract(attributes, {}, context=Context())

    assert set(attributes) == {"traceparent", "baggage"}
    assert system_attributes == {}
    assert trace.get_current_span(extracted).get_span_context().span_id == span.get_span_context().span_id
    assert baggage.get_baggage(CORRELATION_BAGGAGE_KEY, extracted) == "corr-1"


def test_attribute_names_are_matched_case_insensitively() -> None:
    extracted = extract({"TraceParent": W3C_PARENT, "BAGGAGE": "user=7"}, context=Context())

    assert _trace_id(extracted) == W3C_TRACE_ID
    assert baggage.get_baggage("user", extracted) == "7"


@pytest.mark.parametrize("value", ["", "garbage", "00-zz-yy-01", f"00-{'0' * 32}-00f067aa0ba902b7-01"])
def test_a_malformed_traceparent_is_ignored_without_error(value: str) -> None:
    extracted = extract({"traceparent": value}, context=Context())

    assert not has_trace_parent(extracted)


def test_w3c_attributes_win_over_the_aws_trace_header(xray_propagation: None) -> None:
    extracted = extract({"traceparent": W3C_PARENT}, {"AWSTraceHeader": XRAY_HEADER}, context=Context())

    assert _trace_id(extracted) == W3C_TRACE_ID


def test_the_aws_trace_header_is_read_with_the_xray_propagator(xray_propagation: None) -> None:
    extracted = extract({}, {"AWSTraceHeader": XRAY_HEADER}, context=Context())

    assert _trace_id(extracted) == XRAY_TRACE_ID


def test_a_malformed_traceparent_falls_back_to_the_aws_trace_header(xray_propagation: None) -> None:
    extracted = extract({"traceparent": "garbage"}, {"AWSTraceHeader": XRAY_HEADER}, context=Context())

    assert _trace_id(extracted) == XRAY_TRACE_ID


def test_without_the_xray_propagator_the_aws_trace_header_is_ignored() -> None:
    extracted = extract({}, {"AWSTraceHeader": XRAY_HEADER}, context=Context())

    assert not has_trace_parent(extracted)


def test_the_ambient_context_applies_when_the_message_carries_none(otel: Capture) -> None:
    with trace.get_tracer("test").start_as_current_span("lambda invocation") as ambient:
        extracted = extract({}, {})

    assert trace.get_current_span(extracted) is ambient


def test_message_context_wins_over_the_ambient_context(otel: Capture) -> None:
    with trace.get_tracer("test").start_as_current_span("lambda invocation"):
        extracted = extract({"traceparent": W3C_PARENT}, {})

    assert _trace_id(extracted) == W3C_TRACE_ID


def test_an_xray_header_is_injected_as_the_aws_trace_header_system_attribute(
    otel: Capture, xray_propagation: None
) -> None:
    with trace.get_tracer("test").start_as_current_span("request") as span:
        attributes, system_attributes = inject(context.get_current(), "corr-1")

    assert "X-Amzn-Trace-Id" not in attributes
    assert system_attributes["AWSTraceHeader"].startswith("Root=1-")
    assert format(span.get_span_context().span_id, "016x") in system_attributes["AWSTraceHeader"]


# -- correlation id ----------------------------------------------------------------------------------


def test_the_correlation_id_comes_from_the_scope_then_baggage_then_is_new() -> None:
    with correlation_scope("from-request"):
        assert current_correlation_id() == "from-request"
        assert correlation_id_for_enqueue() == "from-request"
    token = context.attach(baggage.set_baggage(CORRELATION_BAGGAGE_KEY, "from-baggage"))
    try:
        assert correlation_id_for_enqueue() == "from-baggage"
    finally:
        context.detach(token)
    assert current_correlation_id() is None
    first, second = correlation_id_for_enqueue(), correlation_id_for_enqueue()
    assert first != second
    assert len(first) == 32


def test_a_job_enqueued_in_a_correlation_scope_carries_its_id() -> None:
    backend = MemoryBackend(f"jobs-{uuid.uuid4().hex[:8]}")
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=ManualClock())

    with correlation_scope("request-42"):
        jobs.enqueue("anything", {})

    [message] = backend.messages()
    assert message.attributes["cloudjobs.correlation_id"] == "request-42"
    assert '"correlation_id":"request-42"' in message.body
    assert "cloudjobs.correlation_id=request-42" in message.attributes["baggage"]


# -- the attribute budget --------------------------------------------------------------------------


def test_the_memory_backend_rejects_eleven_attributes_and_empty_values_per_entry() -> None:
    backend = MemoryBackend(f"jobs-{uuid.uuid4().hex[:8]}")
    eleven = {f"a{index}": "x" for index in range(11)}
    ten = {f"a{index}": "x" for index in range(10)}

    results = backend.send(
        [
            OutgoingMessage(body="{}", attributes=eleven),
            OutgoingMessage(body="{}", attributes={"a": ""}),
            OutgoingMessage(body="{}", attributes=ten),
        ]
    )

    assert [result.is_sent for result in results] == [False, False, True]
    assert "10 message attributes" in (results[0].error or "")
    assert "empty" in (results[1].error or "")
    assert len(backend) == 1


def test_fit_attributes_drops_the_lowest_priority_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    attributes = {
        "cloudjobs.type": "t",
        "cloudjobs.id": "i",
        "cloudjobs.correlation_id": "c",
        "traceparent": W3C_PARENT,
        "tracestate": "a=b",
        "baggage": "k=v",
        "empty": "",
        **{f"uberctx-{index}": "v" for index in range(4)},
        **{f"x-b3-field-{index}": "v" for index in range(3)},
    }

    with caplog.at_level(logging.WARNING, logger="cloudjobs.telemetry"):
        fitted = fit_attributes(attributes)

    assert list(fitted) == [
        "cloudjobs.type",
        "cloudjobs.id",
        "cloudjobs.correlation_id",
        "traceparent",
        "tracestate",
        "baggage",
        "uberctx-0",
        "x-b3-field-0",
        "x-b3-field-1",
        "x-b3-field-2",
    ]
    assert "empty" in caplog.text
    assert "uberctx-3" in caplog.text


def test_merge_attributes_keeps_the_extra_ones_and_drops_the_lowest_ranked_received_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    received = {
        **{f"sender-{index}": "v" for index in range(5)},
        "baggage": "k=v",
        "tracestate": "a=b",
        "cloudjobs.type": "t",
        "cloudjobs.id": "i",
        "traceparent": W3C_PARENT,
    }
    extra = {"cloudjobs.dead_letter": "{}", "sender-0": "replaced"}

    with caplog.at_level(logging.WARNING, logger="cloudjobs.telemetry"):
        merged = merge_attributes(received, extra)

    assert len(merged) == 10
    assert merged["cloudjobs.dead_letter"] == "{}"
    assert merged["sender-0"] == "replaced"
    assert merged["traceparent"] == W3C_PARENT
    assert "baggage" not in merged
    assert "baggage" in caplog.text
    assert merge_attributes({"traceparent": W3C_PARENT}, extra) == {"traceparent": W3C_PARENT, **extra}


def test_fit_attributes_drops_baggage_before_exceeding_the_size_limit() -> None:
    attributes = {"cloudjobs.type": "t", "traceparent": W3C_PARENT, "baggage": "k=" + "v" * 500}

    fitted = fit_attributes(attributes, body="{}", max_size=200)

    assert list(fitted) == ["cloudjobs.type", "traceparent"]


def test_fit_attributes_leaves_a_message_within_the_limits_alone(caplog: pytest.LogCaptureFixture) -> None:
    attributes = {"cloudjobs.type": "t", "traceparent": W3C_PARENT}

    assert fit_attributes(attributes, body="{}", max_size=1024) == attributes
    assert caplog.text == ""


_GETTER: Getter[Any] = DefaultGetter()
_SETTER: Setter[Any] = DefaultSetter()


class _ManyFieldsPropagator(TextMapPropagator):
    """Writes one field per baggage entry, as the Jaeger propagator does (``uberctx-<key>``)."""

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = _GETTER
    ) -> Context:
        return context if context is not None else Context()

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = _SETTER
    ) -> None:
        for index in range(12):
            setter.set(carrier, f"uberctx-entry{index}", "value")

    @property
    def fields(self) -> set[str]:
        return {f"uberctx-entry{index}" for index in range(12)}


@pytest.fixture
def many_fields_propagation() -> Iterator[None]:
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(_ManyFieldsPropagator())
    yield
    propagate.set_global_textmap(previous)


def test_a_message_over_the_budget_is_still_sent_without_its_lowest_priority_fields(
    many_fields_propagation: None, caplog: pytest.LogCaptureFixture
) -> None:
    backend = MemoryBackend(f"jobs-{uuid.uuid4().hex[:8]}")
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=ManualClock())

    with caplog.at_level(logging.WARNING, logger="cloudjobs.telemetry"):
        jobs.enqueue("anything", {})

    [message] = backend.messages()
    assert len(message.attributes) == 10
    assert {"cloudjobs.type", "cloudjobs.id", "cloudjobs.correlation_id"} <= set(message.attributes)
    assert "dropped" in caplog.text


def test_a_huge_baggage_is_dropped_rather_than_failing_the_send(caplog: pytest.LogCaptureFixture) -> None:
    backend = MemoryBackend(f"jobs-{uuid.uuid4().hex[:8]}", max_message_size=2048)
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=ManualClock())
    token = context.attach(baggage.set_baggage("big", "x" * 4000))
    try:
        with caplog.at_level(logging.WARNING, logger="cloudjobs.telemetry"):
            jobs.enqueue("anything", {})
    finally:
        context.detach(token)

    [message] = backend.messages()
    assert "baggage" not in message.attributes
    assert "baggage" in caplog.text

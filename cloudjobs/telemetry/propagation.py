"""Trace context and correlation id across SQS: inject into, and extract from, message attributes.

Injection and extraction go through the globally configured OpenTelemetry propagators
(``OTEL_PROPAGATORS``; W3C ``traceparent``/``tracestate`` and ``baggage`` by default), so whatever a
deployment configured is what travels. Attribute names are matched case-insensitively on the way in:
senders spell them differently.

Where a consumer's parent comes from, first match wins:

1. trace context in the message's attributes (W3C ``traceparent``, or any configured propagator's
   fields), written by cloudjobs or by another sender (OpenTelemetry's boto3sqs and JavaScript
   instrumentations, the Java one configured for messaging);
2. the ``AWSTraceHeader`` system attribute, which SQS fills from the sender's X-Ray header; it is read
   with the configured propagators under the ``X-Amzn-Trace-Id`` key, so it needs the X-Ray
   propagator (``opentelemetry-propagator-aws-xray``) among them;
3. the ambient context (e.g. the span a Lambda layer started for the invocation).

A malformed value is ignored (the next source applies); it never fails a job.

The **correlation id** ties together every job started by one request. The envelope carries it (the
source of truth); it is mirrored in the ``cloudjobs.correlation_id`` attribute and in baggage under
:data:`CORRELATION_BAGGAGE_KEY`.

The attribute budget and the correlation id live in :mod:`cloudjobs.telemetry.attributes` and
:mod:`cloudjobs.telemetry.correlation`, which need no OpenTelemetry; their names are also here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context, get_current
from opentelemetry.propagators.textmap import Getter

from cloudjobs.telemetry.attributes import (
    AWS_TRACE_HEADER,
    attribute_rank,
    carries_context,
    fit_attributes,
    is_within_budget,
    merge_attributes,
    trace_id_of,
)
from cloudjobs.telemetry.correlation import (
    CORRELATION_BAGGAGE_KEY,
    correlation_id_for_enqueue,
    correlation_scope,
    current_correlation_id,
    reset_correlation_id,
    set_correlation_id,
)

__all__ = [
    "AWS_TRACE_HEADER",
    "CORRELATION_BAGGAGE_KEY",
    "XRAY_TRACE_HEADER",
    "attribute_rank",
    "carries_context",
    "correlation_id_for_enqueue",
    "correlation_scope",
    "current_correlation_id",
    "extract",
    "fit_attributes",
    "has_trace_parent",
    "inject",
    "is_within_budget",
    "merge_attributes",
    "reset_correlation_id",
    "set_correlation_id",
    "trace_id_of",
]

XRAY_TRACE_HEADER: Final = "X-Amzn-Trace-Id"
"""The key the X-Ray propagator reads and writes."""


# -- injection and extraction ----------------------------------------------------------------------


def inject(context: Context, correlation_id: str) -> tuple[dict[str, str], dict[str, str]]:
    """The message attributes and system attributes that carry ``context`` and the correlation id.

    The correlation id is added to the baggage. An X-Ray header (from the X-Ray propagator, when
    configured) becomes the ``AWSTraceHeader`` system attribute, which X-Ray reads and which does
    not count towards the ten attributes. Empty values are dropped (SQS refuses them).

    Returns:
        ``(attributes, system_attributes)``.
    """
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=baggage.set_baggage(CORRELATION_BAGGAGE_KEY, correlation_id, context))
    system_attributes: dict[str, str] = {}
    attributes: dict[str, str] = {}
    for name, value in carrier.items():
        if not value:
            continue
        if name.lower() == XRAY_TRACE_HEADER.lower():
            system_attributes[AWS_TRACE_HEADER] = value
        else:
            attributes[name] = value
    return attributes, system_attributes


class _CaseInsensitiveGetter(Getter[Mapping[str, str]]):
    """Reads a carrier whose keys were lower-cased."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key.lower())
        return [value] if value else None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_GETTER: Final = _CaseInsensitiveGetter()


def extract(
    attributes: Mapping[str, str],
    system_attributes: Mapping[str, str] | None = None,
    *,
    context: Context | None = None,
) -> Context:
    """The context a received message continues: see the module docstring for the precedence.

    Args:
        attributes: the message attributes (any spelling of the names).
        system_attributes: the message system attributes (``AWSTraceHeader``).
        context: the ambient context (default: the current one); kept where the message has nothing.

    Never raises for malformed values: the propagators ignore what they cannot parse.
    """
    result = context if context is not None else get_current()
    trace_header = (system_attributes or {}).get(AWS_TRACE_HEADER)
    if trace_header:
        # Extracted first so that trace context in the attributes, extracted next, overrides it.
        result = propagate.extract({XRAY_TRACE_HEADER.lower(): trace_header}, result, getter=_GETTER)
    if attributes:
        carrier = {name.lower(): value for name, value in attributes.items()}
        result = propagate.extract(carrier, result, getter=_GETTER)
    return result


def has_trace_parent(context: Context) -> bool:
    """True when ``context`` holds a valid span context (a trace to continue)."""
    return trace.get_current_span(context).get_span_context().is_valid

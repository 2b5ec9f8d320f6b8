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

SQS takes at most ten attributes per message and refuses empty values. :func:`fit_attributes` keeps
the budget by dropping the lowest-priority attributes, with a warning, so a send never fails for
telemetry. Highest priority first:

==== ========================================================================================
rank attributes
==== ========================================================================================
1    ``cloudjobs.type``, ``cloudjobs.id``, ``cloudjobs.dead_letter``
2    ``traceparent``
3    ``cloudjobs.correlation_id`` (the body keeps the correlation id anyway)
4    any other attribute, in the order given (a sender's own, other propagators' trace fields)
5    ``tracestate``
6    ``baggage``
7    per-entry baggage fields of other propagators (``uberctx-*``, ``ot-baggage-*``)
==== ========================================================================================
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import uuid
from collections.abc import Iterator, Mapping
from typing import Final

from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context, get_current
from opentelemetry.propagators.textmap import Getter

from cloudjobs.backends.base import MAX_MESSAGE_ATTRIBUTES, message_size
from cloudjobs.envelope import (
    CORRELATION_ATTRIBUTE,
    DEAD_LETTER_ATTRIBUTE,
    ID_ATTRIBUTE,
    TYPE_ATTRIBUTE,
)
from cloudjobs.job import current_job

logger = logging.getLogger("cloudjobs.telemetry")

CORRELATION_BAGGAGE_KEY: Final = "cloudjobs.correlation_id"
"""The baggage entry that mirrors the correlation id (also read from an incoming request's baggage)."""
AWS_TRACE_HEADER: Final = "AWSTraceHeader"
"""The SQS message system attribute holding the sender's X-Ray trace header."""
XRAY_TRACE_HEADER: Final = "X-Amzn-Trace-Id"
"""The key the X-Ray propagator reads and writes."""

_RANKS: Final = {
    TYPE_ATTRIBUTE: 0,
    ID_ATTRIBUTE: 0,
    DEAD_LETTER_ATTRIBUTE: 0,
    "traceparent": 1,
    CORRELATION_ATTRIBUTE: 2,
    "tracestate": 4,
    "baggage": 5,
}
_OTHER_RANK: Final = 3
_BAGGAGE_ENTRY_RANK: Final = 6
_BAGGAGE_ENTRY_PREFIXES: Final = ("uberctx-", "ot-baggage-")
_CLOUDJOBS_PREFIX: Final = "cloudjobs."
_OWN_ATTRIBUTES: Final = frozenset(
    {TYPE_ATTRIBUTE, ID_ATTRIBUTE, CORRELATION_ATTRIBUTE, DEAD_LETTER_ATTRIBUTE}
)
_SIZE_DROPPABLE_RANK: Final = 4
"""Attributes from this rank down may also be dropped to keep a message within its size limit."""

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cloudjobs_correlation_id", default=None
)


# -- correlation id --------------------------------------------------------------------------------


def current_correlation_id() -> str | None:
    """The correlation id in force here: the one set by :func:`correlation_scope` (a running job
    sets its own), else the running job's, else an incoming request's baggage entry, else None."""
    explicit = _correlation_id.get()
    if explicit is not None:
        return explicit
    job = current_job()
    if job is not None:
        return job.correlation_id
    value = baggage.get_baggage(CORRELATION_BAGGAGE_KEY)
    return value if isinstance(value, str) and value else None


@contextlib.contextmanager
def correlation_scope(correlation_id: str) -> Iterator[str]:
    """Make ``correlation_id`` the current one for the ``with`` block (e.g. a web request's own id).

    Jobs enqueued inside the block carry it; log records get it through the log filter.
    """
    token = _correlation_id.set(correlation_id)
    try:
        yield correlation_id
    finally:
        _correlation_id.reset(token)


def set_correlation_id(correlation_id: str | None) -> contextvars.Token[str | None]:
    """Set the current correlation id; returns the token for :func:`reset_correlation_id`."""
    return _correlation_id.set(correlation_id)


def reset_correlation_id(token: contextvars.Token[str | None]) -> None:
    """Restore the correlation id in force before :func:`set_correlation_id`."""
    _correlation_id.reset(token)


def correlation_id_for_enqueue() -> str:
    """The correlation id of a job enqueued here: the current one, or a new one (32 hex digits)."""
    return current_correlation_id() or uuid.uuid4().hex


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


# -- the attribute budget --------------------------------------------------------------------------


def attribute_rank(name: str) -> int:
    """An attribute's priority under the budget: 0 is kept longest (see the module docstring)."""
    rank = _RANKS.get(name)
    if rank is not None:
        return rank
    lowered = name.lower()
    rank = _RANKS.get(lowered)
    if rank is not None:
        return rank
    if lowered.startswith(_BAGGAGE_ENTRY_PREFIXES):
        return _BAGGAGE_ENTRY_RANK
    return _OTHER_RANK


def is_within_budget(attributes: Mapping[str, str], *, max_count: int = MAX_MESSAGE_ATTRIBUTES) -> bool:
    """True when SQS takes these attributes as they are: at most ``max_count``, none empty."""
    return len(attributes) <= max_count and all(attributes.values())


def carries_context(attributes: Mapping[str, str], system_attributes: Mapping[str, str]) -> bool:
    """True when a message may carry trace context or baggage: an ``AWSTraceHeader``, or an
    attribute outside the ``cloudjobs.`` namespace (a cloudjobs message without either has none)."""
    if system_attributes and system_attributes.get(AWS_TRACE_HEADER):
        return True
    if attributes.keys() <= _OWN_ATTRIBUTES:
        # The common case, answered without a loop: this runs for every delivery.
        return False
    return any(not name.startswith(_CLOUDJOBS_PREFIX) for name in attributes)


def merge_attributes(original: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``extra`` over ``original`` within SQS's ten attributes: for a copy of a received message.

    ``extra`` is always kept; past the budget ``original``'s lowest-ranked attributes are dropped
    with a warning (see :func:`fit_attributes`), so a dead-lettered copy keeps its ``traceparent``
    and job attributes before a sender's own attributes, ``tracestate`` and ``baggage``.
    """
    merged = {**original, **extra}
    if len(merged) <= MAX_MESSAGE_ATTRIBUTES:
        return merged
    rest = {name: value for name, value in original.items() if name not in extra}
    return {**fit_attributes(rest, max_count=max(MAX_MESSAGE_ATTRIBUTES - len(extra), 0)), **extra}


def fit_attributes(
    attributes: Mapping[str, str],
    *,
    body: str = "",
    max_size: int | None = None,
    max_count: int = MAX_MESSAGE_ATTRIBUTES,
) -> dict[str, str]:
    """Keep ``attributes`` within SQS's limits, dropping the lowest-priority ones with a warning.

    Empty values are dropped (SQS refuses them). Past ``max_count`` attributes, the lowest-ranked
    go. When ``max_size`` is given and body plus attributes exceed it, ``tracestate``, ``baggage`` and
    per-entry baggage fields go too, lowest first; what remains may still be too large (the caller
    reports that).

    Args:
        attributes: the attributes, in the order they were added.
        body: the message body (for the size).
        max_size: the queue's message size limit in bytes, or None to skip the size check.
        max_count: attributes allowed per message (SQS: 10).
    """
    kept = {name: value for name, value in attributes.items() if value}
    dropped = [name for name in attributes if name not in kept]
    if len(kept) > max_count:
        ranked = sorted(kept, key=attribute_rank)
        dropped += ranked[max_count:]
        kept = {name: kept[name] for name in ranked[:max_count]}
    if max_size is not None and message_size(body, kept) > max_size:
        for name in sorted(kept, key=attribute_rank, reverse=True):
            if attribute_rank(name) < _SIZE_DROPPABLE_RANK or message_size(body, kept) <= max_size:
                break
            del kept[name]
            dropped.append(name)
    if dropped:
        logger.warning(
            "message attributes dropped to keep within SQS's limits (%d attributes, non-empty values, "
            "size): %s",
            max_count,
            ", ".join(dropped),
        )
        # Keep the caller's order among what is left.
        return {name: value for name, value in attributes.items() if name in kept}
    return kept


def trace_id_of(attributes: Mapping[str, str]) -> str | None:
    """The W3C trace id (32 lowercase hex digits) of a message's ``traceparent`` attribute, or None
    when it carries none or an invalid one."""
    header = attributes.get("traceparent")
    if header is None:
        return None
    parts = header.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32:
        return None
    trace_id = parts[1].lower()
    try:
        is_zero = int(trace_id, 16) == 0
    except ValueError:
        return None
    return None if is_zero else trace_id

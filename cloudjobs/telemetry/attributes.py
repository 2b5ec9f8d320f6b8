"""Message attributes for telemetry, without OpenTelemetry: the attribute budget, whether a message
carries trace context, and the trace id a ``traceparent`` names.

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

import logging
from collections.abc import Mapping
from typing import Final

from cloudjobs.backends.base import MAX_MESSAGE_ATTRIBUTES, message_size
from cloudjobs.envelope import (
    CORRELATION_ATTRIBUTE,
    DEAD_LETTER_ATTRIBUTE,
    ID_ATTRIBUTE,
    TYPE_ATTRIBUTE,
)

logger = logging.getLogger("cloudjobs.telemetry")

AWS_TRACE_HEADER: Final = "AWSTraceHeader"
"""The SQS message system attribute holding the sender's X-Ray trace header."""

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

"""Copies of a received message that must still fit SQS's limits: the dead-letter copy.

A dead-letter copy keeps the body and every attribute of the delivery (String, Number, Binary and
custom types, unchanged) and adds the ``cloudjobs.dead_letter`` record. SQS refuses a message over
ten attributes or over the queue's ``MaximumMessageSize`` (body plus attribute names, types and
values), so what does not fit goes, in this order, until the copy fits:

1. past ten attributes, the delivery's lowest-ranked ones (a sender's own first, then ``tracestate``
   and ``baggage``; see :func:`~cloudjobs.telemetry.propagation.attribute_rank`);
2. over the size: the record's traceback, then its error text is cut down;
3. cloudjobs' mirror attributes (``cloudjobs.type``, ``cloudjobs.id``, ``cloudjobs.correlation_id``:
   the envelope holds the same);
4. ``tracestate`` and ``baggage``;
5. the record itself, logged at ERROR (the reason is still in the job's status record, if it has one).

The record is ASCII JSON, so it holds no character SQS refuses, whatever the job type or error say.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Final

from cloudjobs.backends.base import (
    MAX_MESSAGE_ATTRIBUTES,
    Delivery,
    TypedAttribute,
    attribute_names,
    message_size,
)
from cloudjobs.envelope import CORRELATION_ATTRIBUTE, DEAD_LETTER_ATTRIBUTE, ID_ATTRIBUTE, TYPE_ATTRIBUTE
from cloudjobs.telemetry.attributes import attribute_rank

logger = logging.getLogger("cloudjobs.applier")

_MIRRORS: Final = (TYPE_ATTRIBUTE, ID_ATTRIBUTE, CORRELATION_ATTRIBUTE)
_CONTEXT_EXTRAS: Final = ("tracestate", "baggage")
_SHORTEST_ERROR: Final = 200


def dead_letter_attributes_within(
    delivery: Delivery, record: Mapping[str, str], *, max_size: int
) -> tuple[dict[str, str], dict[str, TypedAttribute]]:
    """The string and typed attributes of ``delivery``'s dead-letter copy, ``record`` added, cut down
    to fit SQS's limits in the order the module docstring gives.

    Args:
        delivery: the message being dead-lettered.
        record: the attributes to add (the ``cloudjobs.dead_letter`` record).
        max_size: the dead-letter queue's ``MaximumMessageSize`` in bytes.
    """
    strings = {name: value for name, value in delivery.attributes.items() if name not in record}
    typed = {name: value for name, value in delivery.typed_attributes.items() if name not in record}
    _fit_count(strings, typed, budget=MAX_MESSAGE_ATTRIBUTES - len(record), message_id=delivery.message_id)
    extra = dict(record)

    def size() -> int:
        return message_size(delivery.body, {**strings, **extra}, typed)

    if size() > max_size and DEAD_LETTER_ATTRIBUTE in extra:
        extra[DEAD_LETTER_ATTRIBUTE] = _shrink_record(extra[DEAD_LETTER_ATTRIBUTE], size() - max_size)
    for names in (_MIRRORS, _CONTEXT_EXTRAS):
        for name in names:
            if size() <= max_size:
                break
            strings.pop(name, None)
            typed.pop(name, None)
    if size() > max_size and extra:
        logger.error(
            "dead-letter copy of message %s sent without its record (%s): body and attributes exceed "
            "the dead-letter queue's %d bytes",
            delivery.message_id,
            ", ".join(extra),
            max_size,
        )
        extra = {}
    return {**strings, **extra}, typed


def _fit_count(
    strings: dict[str, str], typed: dict[str, TypedAttribute], *, budget: int, message_id: str
) -> None:
    if len(attribute_names(strings, typed)) <= budget:
        return
    # In the order they came (a stable sort keeps it among equals), strings before typed ones.
    names = list(dict.fromkeys([*strings, *typed]))
    dropped = sorted(names, key=attribute_rank)[max(budget, 0) :]
    for name in dropped:
        strings.pop(name, None)
        typed.pop(name, None)
    logger.warning(
        "message %s: attributes dropped from its dead-letter copy (SQS takes %d): %s",
        message_id,
        MAX_MESSAGE_ATTRIBUTES,
        ", ".join(sorted(dropped)),
    )


def _shrink_record(value: str, excess: int) -> str:
    """The record without its traceback, and its error cut, to lose ``excess`` bytes if it can."""
    try:
        record = json.loads(value)
    except ValueError:
        return value
    if not isinstance(record, dict):
        return value
    before = len(value)
    record.pop("traceback", None)
    shrunk = json.dumps(record, separators=(",", ":"))
    error = record.get("error")
    still = excess - (before - len(shrunk))
    if still > 0 and isinstance(error, str):
        record["error"] = error[: max(_SHORTEST_ERROR, len(error) - still - 3)] + "..."
        shrunk = json.dumps(record, separators=(",", ":"))
    return shrunk

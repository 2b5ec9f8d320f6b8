"""The claim-check format of AWS's SQS extended client libraries, and what cloudjobs adds to it.

A message whose body lives in S3 has the body::

    ["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": "...", "s3Key": "..."}]

and a ``Number`` message attribute ``ExtendedPayloadSize`` holding the stored body's size in bytes
(older Java releases: ``com.amazon.sqs.javamessaging.MessageS3Pointer`` and ``SQSLargePayloadSize``;
both are read). The libraries of every language read and write it, so messages pass both ways.

The stored body is written once, at enqueue. A re-send (a hop, a re-send near the redrive threshold,
a redrive) keeps the pointer and carries the envelope fields it changes (``attempt_offset``,
``redrive_count``, ``due_at``) in the ``cloudjobs.envelope`` message attribute, applied over the
stored envelope when it is read: no object is written twice.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from cloudjobs.backends.base import Delivery, TypedAttribute
from cloudjobs.envelope import Envelope

POINTER_CLASS: Final = "software.amazon.payloadoffloading.PayloadS3Pointer"
LEGACY_POINTER_CLASS: Final = "com.amazon.sqs.javamessaging.MessageS3Pointer"
SIZE_ATTRIBUTE: Final = "ExtendedPayloadSize"
LEGACY_SIZE_ATTRIBUTE: Final = "SQSLargePayloadSize"
ENVELOPE_ATTRIBUTE: Final = "cloudjobs.envelope"
"""The envelope fields a re-sent pointer message changes (JSON); absent on a first send."""
_OVERRIDDEN: Final = ("attempt_offset", "redrive_count", "due_at")


@dataclass(frozen=True, slots=True)
class Pointer:
    """Where a message's body is stored."""

    bucket: str
    key: str

    def body(self) -> str:
        """The message body that points here."""
        return json.dumps([POINTER_CLASS, {"s3BucketName": self.bucket, "s3Key": self.key}])


def size_attribute(size: int) -> dict[str, TypedAttribute]:
    """The ``ExtendedPayloadSize`` attribute of a pointer to a body of ``size`` bytes."""
    return {SIZE_ATTRIBUTE: TypedAttribute("Number", str(size))}


def is_pointer_message(delivery: Delivery) -> bool:
    """Whether a message says its body is stored elsewhere (it carries a size attribute)."""
    # Written out rather than a loop over the two names: this runs for every delivery.
    typed, attributes = delivery.typed_attributes, delivery.attributes
    return (
        SIZE_ATTRIBUTE in typed
        or SIZE_ATTRIBUTE in attributes
        or LEGACY_SIZE_ATTRIBUTE in typed
        or LEGACY_SIZE_ATTRIBUTE in attributes
    )


def read_pointer(body: str) -> Pointer | None:
    """The pointer a body holds, or None when it holds none (malformed included)."""
    try:
        content = json.loads(body)
    except ValueError:
        return None
    if not (isinstance(content, list) and len(content) == 2 and isinstance(content[1], dict)):
        return None
    kind, where = content
    if kind not in (POINTER_CLASS, LEGACY_POINTER_CLASS):
        return None
    bucket, key = where.get("s3BucketName"), where.get("s3Key")
    if not (isinstance(bucket, str) and bucket and isinstance(key, str) and key):
        return None
    return Pointer(bucket, key)


def pointer_of(delivery: Delivery) -> Pointer | None:
    """The pointer a message carries (its size attribute and a pointer body), or None for a message
    whose body is its own."""
    if not is_pointer_message(delivery):
        return None
    return read_pointer(delivery.body)


def with_overrides(envelope: Envelope, delivery: Delivery) -> Envelope:
    """The stored envelope with the fields a re-send changed (from ``cloudjobs.envelope``)."""
    overrides = _overrides(delivery.attributes)
    if not overrides:
        return envelope
    changes: dict[str, object] = {}
    for name in ("attempt_offset", "redrive_count"):
        value = overrides.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            changes[name] = value
    if "due_at" in overrides:
        due_at = overrides["due_at"]
        changes["due_at"] = _time(due_at) if isinstance(due_at, str) else None
    return dataclasses.replace(envelope, **changes)  # type: ignore[arg-type]


def override_attribute(attributes: Mapping[str, str], **changes: object) -> dict[str, str]:
    """``attributes`` with the ``cloudjobs.envelope`` attribute updated by ``changes``
    (``attempt_offset``, ``redrive_count``, ``due_at`` as a datetime or None)."""
    overrides = _overrides(attributes)
    for name, value in changes.items():
        assert name in _OVERRIDDEN, name
        overrides[name] = value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value
    return {**attributes, ENVELOPE_ATTRIBUTE: json.dumps(overrides, separators=(",", ":"), sort_keys=True)}


def redrive_count_of(attributes: Mapping[str, str]) -> int:
    """The redrive count a pointer message's attribute says (0 when it says none)."""
    value = _overrides(attributes).get("redrive_count")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _overrides(attributes: Mapping[str, str]) -> dict[str, object]:
    raw = attributes.get(ENVELOPE_ATTRIBUTE)
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return (
        {name: item for name, item in value.items() if name in _OVERRIDDEN} if isinstance(value, dict) else {}
    )


def _time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

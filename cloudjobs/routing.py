"""A delivery's envelope: decoded from the body, or built for a foreign message by the routing rules.

A message another sender put on the queue (plain JSON or text, no envelope) runs as the job type its
``CLOUDJOBS_JOB_TYPE_ATTRIBUTE`` attribute names, else as ``CLOUDJOBS_DEFAULT_JOB_TYPE``; with
neither it cannot run (``DecodeError``, reason ``unroutable``).
"""

from __future__ import annotations

from cloudjobs.backends.base import Delivery
from cloudjobs.envelope import CORRELATION_ATTRIBUTE, Envelope, ForeignMessageError, decode
from cloudjobs.errors import DecodeError
from cloudjobs.ids import random_hex
from cloudjobs.reasons import Reason
from cloudjobs.settings import SettingsModel


def decode_delivery(delivery: Delivery, settings: SettingsModel) -> Envelope:
    """The delivery's envelope.

    Raises:
        DecodeError: the body is no valid envelope and no routing rule applies to it.
    """
    try:
        return decode(delivery.body)
    except ForeignMessageError as foreign:
        job_type = _route(delivery, settings)
        if job_type is None:
            raise DecodeError(
                f"{foreign}; no routing rule applies (set CLOUDJOBS_DEFAULT_JOB_TYPE or "
                "CLOUDJOBS_JOB_TYPE_ATTRIBUTE)",
                reason=Reason.UNROUTABLE,
            ) from None
        return Envelope(
            id=delivery.message_id,
            type=job_type,
            payload=foreign.content,
            correlation_id=attribute_of(delivery, CORRELATION_ATTRIBUTE) or random_hex(),
            enqueued_at=delivery.sent_at,
        )


def attribute_of(delivery: Delivery, name: str) -> str | None:
    """A message attribute's value, matched case-insensitively (senders spell names differently)."""
    wanted = name.lower()
    for key, value in delivery.attributes.items():
        if key.lower() == wanted:
            return value
    return None


def _route(delivery: Delivery, settings: SettingsModel) -> str | None:
    if settings.job_type_attribute:
        routed = attribute_of(delivery, settings.job_type_attribute)
        if routed:
            return routed
    return settings.default_job_type

"""Pending records, written at enqueue for jobs that keep a record, before the message is sent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

from cloudjobs.definition import JobDefinition
from cloudjobs.envelope import Envelope
from cloudjobs.idempotency.base import Claim, IdempotencyStore, JobControlStore, payload_hash, store_key

logger = logging.getLogger("cloudjobs.producer")


def write_pending(
    envelopes: Sequence[Envelope],
    *,
    registry: Mapping[str, JobDefinition],
    store: Callable[[], IdempotencyStore],
    retention: timedelta,
) -> None:
    """Write a ``pending`` record for each job that keeps one, before anything is sent.

    The order matters: record first, then send. A failed write fails the enqueue before the
    message exists (the caller sees the error, nothing is lost); a send that fails after the
    write leaves the record pending, forgotten after its retention. A live record under the key
    (a duplicate enqueue) is left alone: the write is conditional.

    Args:
        envelopes: the messages about to be sent.
        registry: job type → definition; types not in it keep no record here unless enqueued with
            ``track_status=True``.
        store: the store, asked for only when a job keeps a record; one that is not a
            :class:`JobControlStore` gets no pending records.
        retention: how long a pending record is kept.

    Raises:
        IdempotencyStoreError: the store could not be reached.
        ConfigurationError: no store is configured.
    """
    control: IdempotencyStore | None = None
    for envelope in envelopes:
        key = record_key_of(envelope, registry)
        if key is None:
            continue
        control = control or store()
        if not isinstance(control, JobControlStore):
            return
        claim = Claim(
            key=key,
            job_id=envelope.id,
            job_type=envelope.type,
            payload_hash=payload_hash(envelope.type, envelope.payload),
            due_at=envelope.due_at,
            correlation_id=envelope.correlation_id,
        )
        if not control.put_pending(claim, retention=retention):
            logger.info("job %s: a record under its key exists; no pending record written", envelope.id)


def record_key_of(envelope: Envelope, registry: Mapping[str, JobDefinition]) -> str | None:
    """The store key of the record a job keeps, or None when it keeps none.

    A job keeps a record when its type is registered (in ``registry``) with one, or when it was
    enqueued with ``track_status=True``; the key is the one its consumer derives (the producer's
    idempotency key, else the one derived from the payload, else the job id).
    """
    definition = registry.get(envelope.type)
    key: str | None = None
    if definition is not None and definition.has_record:
        key = definition.idempotency_key_of(
            job_id=envelope.id,
            producer_key=envelope.idempotency_key,
            payload=definition.validate(envelope.payload),
        )
    elif envelope.track_status:
        key = envelope.idempotency_key or envelope.id
    return store_key(envelope.type, key) if key is not None else None

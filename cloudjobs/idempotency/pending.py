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
        registry: job type → definition; types not in it keep no record here.
        store: the store, asked for only when a job keeps a record; one that is not a
            :class:`JobControlStore` gets no pending records.
        retention: how long a pending record is kept.

    Raises:
        IdempotencyStoreError: the store could not be reached.
        ConfigurationError: no store is configured.
    """
    control: IdempotencyStore | None = None
    for envelope in envelopes:
        definition = registry.get(envelope.type)
        if definition is None or not definition.has_record:
            continue
        key = definition.idempotency_key_of(
            job_id=envelope.id,
            producer_key=envelope.idempotency_key,
            payload=definition.validate(envelope.payload),
        )
        assert key is not None  # jobs with a record always have a key
        control = control or store()
        if not isinstance(control, JobControlStore):
            return
        claim = Claim(
            key=store_key(envelope.type, key),
            job_id=envelope.id,
            job_type=envelope.type,
            payload_hash=payload_hash(envelope.type, envelope.payload),
            due_at=envelope.due_at,
            correlation_id=envelope.correlation_id,
        )
        if not control.put_pending(claim, retention=retention):
            logger.info("job %s: a record under its key exists; no pending record written", envelope.id)

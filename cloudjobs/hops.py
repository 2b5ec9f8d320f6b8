"""Delays past SQS's 15 minutes, without extra infrastructure: a job hops until it is due.

SQS delays a message by at most 900 s. A job enqueued with a longer delay (or a ``run_at`` further
away) carries its due time in the envelope (``due_at``) and is sent with the longest delay. Each time
a consumer receives it before it is due, the handler does not run and no attempt is counted; the
message hides again:

1. **Final hop**: with 900 s or less to go, a copy is sent with the rest as its ``DelaySeconds`` and
   *without* ``due_at``, and the received message is deleted. The copy's receive count starts at
   zero, so the job's attempts (and its redrive threshold) count from its due time.
2. **Re-send hop**: when the received message's receive count is one short of the queue's
   ``maxReceiveCount`` (the next receive would dead-letter it), or when hiding it again would take
   it within an hour of the queue's retention period, a copy keeping ``due_at`` is sent with a
   900 s delay and the message is deleted.
3. **Visibility hop** otherwise: the message is hidden until 900 s before it is due, by at most
   SQS's 12 hours per receive.

Cost per job and day of delay, with a redrive threshold of 5 receives: two receives and two
ChangeMessageVisibility calls, plus a send and a delete every third receive, so about five and a
third requests, plus three for the final hop (a send, a delete, a receive). A receive fetches up to
ten messages, so the receives cost less when hops share them.

A crash between a hop's send and its delete leaves two copies of the job, both with its job id: both
run when due. A job that keeps an idempotency record (``idempotent=True``; its key defaults to the
job id) runs once; a plain job may run twice. If the send fails, the message is hidden for the time
to go instead and tried again then.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta
from typing import Final

from cloudjobs.backends.base import MAX_DELAY, MAX_VISIBILITY, Delivery, OutgoingMessage, QueueInfo
from cloudjobs.envelope import Envelope, encode
from cloudjobs.ids import random_hex
from cloudjobs.outcomes import Deferred, Reason
from cloudjobs.payloads.pointer import override_attribute, pointer_of

MAX_SCHEDULE_DELAY: Final = timedelta(days=366)
"""The longest delay (or the furthest ``run_at``) a job may be enqueued with: a year and a day."""

RETENTION_MARGIN: Final = timedelta(hours=1)
"""How close to the queue's retention period a hidden message may come before it is re-sent."""


def hop(
    delivery: Delivery,
    envelope: Envelope,
    queue: QueueInfo,
    now: datetime,
    *,
    longest: timedelta = MAX_DELAY,
) -> Deferred | None:
    """The hop of a job that carries a due time, or None when it carries none (run it).

    A job received at or after its due time (its final hop's send failed) still takes a final hop,
    with no delay, so that its attempts count from a fresh receive.

    Args:
        delivery: the received message.
        envelope: its envelope (with ``due_at``).
        queue: the queue's configuration (redrive threshold, retention).
        now: the current time.
        longest: the longest delay of a hop (SQS's 900 s; shorter in tests).
    """
    due_at = envelope.due_at
    if due_at is None:
        return None
    remaining = due_at - now
    if remaining <= longest:
        # Whole seconds, rounded up: the copy must not arrive before its time.
        delay = timedelta(seconds=math.ceil(max(remaining, timedelta(0)).total_seconds()))
        final = dataclasses.replace(envelope, due_at=None, attempt_offset=0)
        return Deferred(delay=delay, reason=Reason.NOT_DUE, requeue=resend_copy(delivery, final, delay))
    hidden = min(remaining - longest, MAX_VISIBILITY)
    limit = queue.max_receive_count
    near_redrive = limit is not None and delivery.receive_count >= limit - 1
    near_retention = (
        queue.retention is not None
        and (now - delivery.sent_at) + hidden + RETENTION_MARGIN >= queue.retention
    )
    if near_redrive or near_retention:
        again = dataclasses.replace(envelope, attempt_offset=0)
        return Deferred(delay=hidden, reason=Reason.NOT_DUE, requeue=resend_copy(delivery, again, longest))
    return Deferred(delay=hidden, reason=Reason.NOT_DUE)


def resend_copy(
    delivery: Delivery, envelope: Envelope, delay: timedelta, *, is_fifo: bool = False
) -> OutgoingMessage:
    """A copy of a received message carrying ``envelope``, to send in its place: its attributes,
    group, trace header and typed attributes kept, its receive count starting again from zero.

    On a FIFO queue (no per-message delay) it is sent at once, under a fresh deduplication id, so
    SQS does not drop it as a repeat of the original. A pointer message keeps its pointer (see
    :mod:`cloudjobs.payloads.pointer`).
    """
    body, attributes = encode(envelope), dict(delivery.attributes)
    if pointer_of(delivery) is not None:
        # The body stays where it is stored; the fields a re-send changes travel beside the pointer.
        body = delivery.body
        attributes = override_attribute(
            attributes,
            attempt_offset=envelope.attempt_offset,
            redrive_count=envelope.redrive_count,
            due_at=envelope.due_at,
        )
    return OutgoingMessage(
        body=body,
        attributes=attributes,
        delay=timedelta(0) if is_fifo else delay,
        group_id=delivery.group_id,
        deduplication_id=f"{envelope.id[:64]}-{random_hex()}" if is_fifo else None,
        system_attributes=delivery.system_attributes,
        typed_attributes=delivery.typed_attributes,
    )

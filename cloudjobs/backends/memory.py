"""MemoryBackend: an in-process queue with SQS's semantics, for tests (yours and ours).

It keeps what matters to a consumer: per-message delay, visibility timeout counted from receive,
receive count, redrive to a dead-letter queue once the receive count exceeds ``max_receive_count``,
FIFO groups (one message of a group in flight at a time, 5-minute deduplication) and SQS's input
limits (ten attributes, no empty values, the size limit in UTF-8 bytes, ten entries a batch).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from cloudjobs.backends.base import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_BATCH_ENTRIES,
    MAX_BATCH_REQUEST_SIZE,
    MAX_DELAY,
    MAX_DELAY_SECONDS,
    MAX_MESSAGE_ATTRIBUTES,
    MAX_VISIBILITY,
    MAX_WAIT_TIME_SECONDS,
    Delivery,
    OutgoingMessage,
    QueueCounts,
    QueueInfo,
    SendResult,
    TypedAttribute,
    attribute_names,
    first_invalid_character,
)
from cloudjobs.backends.copies import dead_letter_attributes_within
from cloudjobs.clock import Clock, SystemClock
from cloudjobs.errors import BackendError, ConfigurationError
from cloudjobs.ids import random_hex, random_id

_DEDUPLICATION_INTERVAL: Final = timedelta(minutes=5)
_MAX_WAIT: Final = timedelta(seconds=MAX_WAIT_TIME_SECONDS)


@dataclass(slots=True)
class StoredMessage:
    """A message as the memory queue holds it (mutable: it is the queue's own state)."""

    message_id: str
    body: str
    attributes: dict[str, str]
    sent_at: datetime
    visible_at: datetime
    group_id: str | None = None
    system_attributes: dict[str, str] = field(default_factory=dict)
    typed_attributes: dict[str, TypedAttribute] = field(default_factory=dict)
    receive_count: int = 0
    receipt: str | None = None
    received_at: datetime | None = None


class MemoryBackend:
    """A thread-safe in-memory queue, optionally with its own dead-letter queue.

    Args:
        name: the queue's name (a FIFO queue's name ends in ``.fifo``).
        max_receive_count: receives after which a message moves to the DLQ (None: no DLQ).
        visibility_timeout: the queue's default visibility timeout.
        max_message_size: the size limit in bytes (body plus attributes).
        clock: the time source; :meth:`advance` moves this queue's time further on top of it.
    """

    def __init__(
        self,
        name: str = "jobs",
        *,
        max_receive_count: int | None = 5,
        visibility_timeout: timedelta = timedelta(seconds=30),
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        clock: Clock | None = None,
        _time: _SharedTime | None = None,
    ) -> None:
        self.name = name
        self.is_fifo = name.endswith(".fifo")
        self.visibility_timeout = visibility_timeout
        self.max_message_size = max_message_size
        self.max_receive_count = max_receive_count
        self._time = _time or _SharedTime(clock or SystemClock())
        self._messages: dict[str, StoredMessage] = {}
        self._deduplication: dict[str, datetime] = {}
        self._changed = self._time.changed
        self.dead_letter_queue: MemoryBackend | None = None
        if max_receive_count is not None:
            dlq_name = name.removesuffix(".fifo") + "-dlq" + (".fifo" if self.is_fifo else "")
            self.dead_letter_queue = MemoryBackend(
                dlq_name,
                max_receive_count=None,
                visibility_timeout=visibility_timeout,
                max_message_size=max_message_size,
                _time=self._time,
            )

    # -- Backend protocol -------------------------------------------------------------------------

    def info(self) -> QueueInfo:
        """The queue's configuration."""
        return QueueInfo(
            name=self.name,
            url=f"memory://{self.name}",
            is_fifo=self.is_fifo,
            max_message_size=self.max_message_size,
            visibility_timeout=self.visibility_timeout,
            max_receive_count=self.max_receive_count,
            dead_letter_queue=self.dead_letter_queue.name if self.dead_letter_queue is not None else None,
        )

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send up to ten messages; each entry succeeds or fails on its own, as on SQS."""
        if not 1 <= len(messages) <= MAX_BATCH_ENTRIES:
            raise BackendError(f"a batch holds 1 to {MAX_BATCH_ENTRIES} entries", queue=self.name)
        total = sum(message.size for message in messages)
        if total > MAX_BATCH_REQUEST_SIZE:
            raise BackendError(
                f"batch of {total} bytes exceeds the {MAX_BATCH_REQUEST_SIZE}-byte request limit",
                queue=self.name,
                code="BatchRequestTooLong",
            )
        with self._changed:
            results = [self._send_one(message) for message in messages]
            self._changed.notify_all()
        return results

    def receive(
        self, *, max_messages: int, wait: timedelta, visibility: timedelta | None = None
    ) -> list[Delivery]:
        """Receive up to ``max_messages`` visible messages, long-polling up to ``wait``."""
        if not 1 <= max_messages <= MAX_BATCH_ENTRIES:
            raise BackendError(f"max_messages must be 1 to {MAX_BATCH_ENTRIES}", queue=self.name)
        deadline = time.monotonic() + min(wait, _MAX_WAIT).total_seconds()
        with self._changed:
            while True:
                deliveries = self._receive_visible(max_messages, visibility or self.visibility_timeout)
                remaining = deadline - time.monotonic()
                if deliveries or remaining <= 0:
                    return deliveries
                self._changed.wait(min(remaining, self._seconds_until_next_visible()))

    def delete(self, receipts: Sequence[str]) -> list[str]:
        """Delete messages by receipt; a stale or unknown receipt counts as already gone."""
        with self._changed:
            for receipt in receipts:
                message = self._by_receipt(receipt)
                if message is not None:
                    del self._messages[message.message_id]
            self._changed.notify_all()
        return []

    def change_visibility(self, changes: Sequence[tuple[str, timedelta]]) -> list[str]:
        """Hide messages for a new timeout counted from now; returns receipts no longer in flight."""
        gone: list[str] = []
        with self._changed:
            now = self._time.now()
            for receipt, timeout in changes:
                message = self._by_receipt(receipt)
                if message is None or message.visible_at <= now or message.received_at is None:
                    gone.append(receipt)
                    continue
                # SQS caps a received message's total visibility at 12 hours from its receive.
                latest = message.received_at + MAX_VISIBILITY
                message.visible_at = min(now + max(timeout, timedelta(0)), latest)
            self._changed.notify_all()
        return gone

    def dead_letter(self, delivery: Delivery, attributes: Mapping[str, str]) -> None:
        """Copy a delivery into the dead-letter queue with extra attributes (ranked as on SQS)."""
        if self.dead_letter_queue is None:
            raise ConfigurationError(f"queue {self.name!r} has no dead-letter queue")
        strings, typed = dead_letter_attributes_within(
            delivery, attributes, max_size=self.dead_letter_queue.max_message_size
        )
        outgoing = OutgoingMessage(
            body=delivery.body,
            attributes=strings,
            group_id=delivery.group_id,
            deduplication_id=delivery.message_id if self.is_fifo else None,
            system_attributes=delivery.system_attributes,
            typed_attributes=typed,
        )
        result = self.dead_letter_queue.send([outgoing])[0]
        if not result.is_sent:
            raise BackendError(f"dead-letter send refused: {result.error}", queue=self.name)

    # -- QueueStatistics protocol ------------------------------------------------------------------

    def message_counts(self) -> QueueCounts:
        """The queue's message counts (exact here; approximate on SQS)."""
        visible, in_flight, delayed = self.counts()
        return QueueCounts(visible=visible, in_flight=in_flight, delayed=delayed)

    def dead_letter_message_counts(self) -> QueueCounts | None:
        """The dead-letter queue's message counts, or None without one."""
        if self.dead_letter_queue is None:
            return None
        return self.dead_letter_queue.message_counts()

    # -- DeadLetterAdmin protocol ------------------------------------------------------------------

    def receive_dead_letters(self, *, max_messages: int, visibility: timedelta) -> list[Delivery]:
        """Receive from the dead-letter queue without waiting (a memory queue answers exactly)."""
        dlq = self._dead_letters()
        return dlq.receive(max_messages=max_messages, wait=timedelta(0), visibility=visibility)

    def change_dead_letter_visibility(self, changes: Sequence[tuple[str, timedelta]]) -> list[str]:
        """Set dead-letter messages' visibility; returns receipts no longer in flight."""
        return self._dead_letters().change_visibility(changes)

    def delete_dead_letters(self, receipts: Sequence[str]) -> list[str]:
        """Delete dead-letter messages by receipt (stale receipts count as gone)."""
        return self._dead_letters().delete(receipts)

    def purge_dead_letters(self) -> None:
        """Delete every message of the dead-letter queue at once."""
        dlq = self._dead_letters()
        with dlq._changed:
            dlq._messages.clear()
            dlq._changed.notify_all()

    def _dead_letters(self) -> MemoryBackend:
        if self.dead_letter_queue is None:
            raise ConfigurationError(f"queue {self.name!r} has no dead-letter queue")
        return self.dead_letter_queue

    # -- for tests --------------------------------------------------------------------------------

    def sibling(
        self,
        name: str,
        *,
        max_receive_count: int | None = 5,
        visibility_timeout: timedelta | None = None,
        max_message_size: int | None = None,
    ) -> MemoryBackend:
        """Another queue on this one's time: :meth:`advance` on either moves both (an app's named
        queues in tests). Visibility and size default to this queue's."""
        return MemoryBackend(
            name,
            max_receive_count=max_receive_count,
            visibility_timeout=visibility_timeout or self.visibility_timeout,
            max_message_size=max_message_size or self.max_message_size,
            _time=self._time,
        )

    def advance(self, by: timedelta | float) -> None:
        """Move this queue's time (and its DLQ's) forward: delays and visibility timeouts elapse."""
        step = by if isinstance(by, timedelta) else timedelta(seconds=by)
        with self._changed:
            self._time.offset += step
            self._changed.notify_all()

    def now(self) -> datetime:
        """This queue's current time."""
        with self._changed:
            return self._time.now()

    def messages(self) -> list[StoredMessage]:
        """A snapshot of every message in the queue, visible or not, in send order."""
        with self._changed:
            return [_copy(message) for message in self._messages.values()]

    def counts(self) -> tuple[int, int, int]:
        """(visible, in flight, delayed) message counts, as SQS's approximate attributes."""
        with self._changed:
            now = self._time.now()
            visible = sum(1 for m in self._messages.values() if m.visible_at <= now)
            in_flight = sum(1 for m in self._messages.values() if m.visible_at > now and m.receipt)
            delayed = len(self._messages) - visible - in_flight
            return visible, in_flight, delayed

    def __len__(self) -> int:
        with self._changed:
            return len(self._messages)

    # -- internals --------------------------------------------------------------------------------

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        problem = self._check(message)
        if problem is not None:
            return SendResult(error=problem, retryable=False)
        now = self._time.now()
        message_id = random_id()
        if self.is_fifo:
            key = message.deduplication_id or ""
            seen = self._deduplication.get(key)
            if seen is not None and now - seen < _DEDUPLICATION_INTERVAL:
                return SendResult(message_id=message_id)  # accepted, not delivered again
            self._deduplication[key] = now
        self._messages[message_id] = StoredMessage(
            message_id=message_id,
            body=message.body,
            attributes=dict(message.attributes),
            sent_at=now,
            visible_at=now + message.delay,
            group_id=message.group_id,
            system_attributes=dict(message.system_attributes),
            typed_attributes=dict(message.typed_attributes),
        )
        return SendResult(message_id=message_id)

    def _check(self, message: OutgoingMessage) -> str | None:
        if len(attribute_names(message.attributes, message.typed_attributes)) > MAX_MESSAGE_ATTRIBUTES:
            return f"InvalidParameterValue: more than {MAX_MESSAGE_ATTRIBUTES} message attributes"
        values = [*message.attributes.values(), *(a.value for a in message.typed_attributes.values())]
        if any(len(value) == 0 for value in values):
            return "InvalidParameterValue: a message attribute value is empty"
        if invalid := first_invalid_character(message.body, message.attributes):
            return f"InvalidParameterValue: character {invalid} is not allowed in a message"
        size = message.size
        if size > self.max_message_size:
            return f"InvalidParameterValue: message of {size} bytes exceeds {self.max_message_size}"
        if not timedelta(0) <= message.delay <= MAX_DELAY:
            return f"InvalidParameterValue: DelaySeconds must be 0 to {MAX_DELAY_SECONDS}"
        if self.is_fifo:
            if message.delay:
                return "InvalidParameterValue: FIFO queues take no per-message delay"
            if not message.group_id:
                return "MissingParameter: MessageGroupId is required on FIFO queues"
            if not message.deduplication_id:
                return "InvalidParameterValue: MessageDeduplicationId is required"
        return None

    def _receive_visible(self, max_messages: int, visibility: timedelta) -> list[Delivery]:
        now = self._time.now()
        # A FIFO group with a message in flight yields nothing; an idle group may yield several
        # messages in one receive, in order, as SQS does.
        busy_groups = (
            {m.group_id for m in self._messages.values() if m.group_id and m.receipt and m.visible_at > now}
            if self.is_fifo
            else set()
        )
        deliveries: list[Delivery] = []
        # Dicts keep insertion order, which is send order (a redriven message is inserted anew).
        redriven: list[StoredMessage] = []
        for message in self._messages.values():
            if len(deliveries) == max_messages:
                break
            if message.visible_at > now or (self.is_fifo and message.group_id in busy_groups):
                continue
            if (
                self.dead_letter_queue is not None
                and self.max_receive_count is not None
                and message.receive_count >= self.max_receive_count
            ):
                redriven.append(message)
                continue
            message.receive_count += 1
            message.receipt = f"{message.message_id}#{message.receive_count}#{random_hex()[:8]}"
            message.received_at = now
            message.visible_at = now + visibility
            deliveries.append(
                Delivery(
                    message_id=message.message_id,
                    receipt=message.receipt,
                    body=message.body,
                    attributes=_readable(message),
                    receive_count=message.receive_count,
                    sent_at=message.sent_at,
                    queue=self.name,
                    group_id=message.group_id,
                    system_attributes=dict(message.system_attributes),
                    typed_attributes=dict(message.typed_attributes),
                )
            )
        for message in redriven:
            self._redrive(message)
        return deliveries

    def _redrive(self, message: StoredMessage) -> None:
        # As on SQS: the move happens on a receive, keeps the body and attributes, adds no reason.
        assert self.dead_letter_queue is not None
        del self._messages[message.message_id]
        dlq = self.dead_letter_queue
        message.receipt = None
        message.received_at = None
        message.visible_at = self._time.now()
        message.receive_count = 0
        dlq._messages[message.message_id] = message
        dlq._changed.notify_all()

    def _by_receipt(self, receipt: str) -> StoredMessage | None:
        message_id = receipt.split("#", 1)[0]
        message = self._messages.get(message_id)
        if message is None or message.receipt != receipt:
            return None
        return message

    def _seconds_until_next_visible(self) -> float:
        now = self._time.now()
        pending = [m.visible_at for m in self._messages.values() if m.visible_at > now]
        if not pending:
            return _MAX_WAIT.total_seconds()
        return max(0.001, (min(pending) - now).total_seconds())


class _SharedTime:
    """The time of a queue, its DLQ and its siblings: a clock plus the offset that ``advance``
    adds; one lock, and one condition every change notifies (waiters check their own queue)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.offset = timedelta(0)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)

    def now(self) -> datetime:
        return self.clock.now() + self.offset


def _readable(message: StoredMessage) -> dict[str, str]:
    """String attributes as SQS hands them over: custom ``String.<label>`` types among them."""
    strings = dict(message.attributes)
    for name, attribute in message.typed_attributes.items():
        if attribute.data_type.split(".", 1)[0] == "String" and isinstance(attribute.value, str):
            strings[name] = attribute.value
    return strings


def _copy(message: StoredMessage) -> StoredMessage:
    return dataclasses.replace(
        message,
        attributes=dict(message.attributes),
        system_attributes=dict(message.system_attributes),
        typed_attributes=dict(message.typed_attributes),
    )

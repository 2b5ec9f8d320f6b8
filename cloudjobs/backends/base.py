"""The Backend protocol: the little the core needs from a queue service.

A backend carries opaque message bodies and string attributes. It knows nothing of jobs: the core
encodes envelopes, the runtimes decide what to acknowledge. Implementations: ``MemoryBackend`` (in
this package, for tests) and ``SqsBackend`` (``cloudjobs.backends.sqs``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Final, Protocol, runtime_checkable

from cloudjobs.frozen import draft_of

# SQS's limits, defined here once and imported by the backends, settings, provisioning and the CLI.
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SetQueueAttributes.html
MAX_BATCH_ENTRIES: Final = 10
"""SQS batch calls take at most ten entries (SendMessageBatch, DeleteMessageBatch, ...)."""
MAX_DELAY_SECONDS: Final = 900
"""SQS's longest DelaySeconds, per queue or per message: 15 minutes."""
MAX_DELAY: Final = timedelta(seconds=MAX_DELAY_SECONDS)
"""SQS's longest per-message delay."""
MAX_VISIBILITY_TIMEOUT_SECONDS: Final = 43_200
"""SQS's longest VisibilityTimeout: 12 hours."""
MAX_VISIBILITY: Final = timedelta(seconds=MAX_VISIBILITY_TIMEOUT_SECONDS)
"""SQS's longest visibility timeout, and the cap on a received message's total visibility."""
MAX_WAIT_TIME_SECONDS: Final = 20
"""SQS's longest long poll (ReceiveMessage ``WaitTimeSeconds``)."""
MIN_MAX_MESSAGE_SIZE: Final = 1_024
"""SQS's smallest MaximumMessageSize."""
DEFAULT_MAX_MESSAGE_SIZE: Final = 1_048_576
"""SQS's default (and largest) MaximumMessageSize for new queues: 1 MiB."""
MAX_BATCH_REQUEST_SIZE: Final = 1_048_576
"""SendMessageBatch's limit on all entries together, whatever the queue's message size: 1 MiB."""
MAX_MESSAGE_ATTRIBUTES: Final = 10
"""SQS's limit of message attributes per message."""
MIN_RETENTION_SECONDS: Final = 60
"""SQS's shortest MessageRetentionPeriod."""
MAX_RETENTION_SECONDS: Final = 1_209_600
"""SQS's longest MessageRetentionPeriod: 14 days."""
MAX_MAX_RECEIVE_COUNT: Final = 1_000
"""The largest maxReceiveCount SQS accepts in a redrive policy."""
MAX_QUEUE_NAME_LENGTH: Final = 80
"""SQS's longest queue name, ``.fifo`` included."""
MAX_MOVE_TASK_RATE: Final = 500
"""StartMessageMoveTask's fastest rate, in messages per second."""


@dataclass(frozen=True, slots=True)
class TypedAttribute:
    """A message attribute whose data type is not plain ``String``, kept as it came.

    ``Number`` (and ``Number.<label>``) and custom ``String.<label>`` values are text; ``Binary`` (and
    ``Binary.<label>``) values are bytes. Copies of a received message (dead letters, re-sends,
    redrives) carry these unchanged.
    """

    data_type: str
    value: str | bytes

    @property
    def size(self) -> int:
        """Bytes SQS counts for the type and value (the name is counted by the caller)."""
        value = self.value if isinstance(self.value, bytes) else self.value.encode("utf-8")
        return len(self.data_type.encode("utf-8")) + len(value)


def message_size(
    body: str, attributes: Mapping[str, str], typed_attributes: Mapping[str, TypedAttribute] | None = None
) -> int:
    """SQS's size of a message: UTF-8 bytes of the body plus attribute names, types and values.

    A name in ``typed_attributes`` is counted with its own type and value, once.
    """
    typed = typed_attributes or {}
    size = len(body.encode("utf-8"))
    for name, value in attributes.items():
        if name not in typed:
            size += len(name.encode("utf-8")) + len("String") + len(value.encode("utf-8"))
    for name, attribute in typed.items():
        size += len(name.encode("utf-8")) + attribute.size
    return size


def read_attributes(
    received: Iterable[tuple[str, str, str | bytes | None]],
) -> tuple[dict[str, str], dict[str, TypedAttribute]]:
    """Received ``(name, data type, value)`` attributes as a delivery holds them: every ``String``
    value (custom ``String.<label>`` types too) as text, every type but plain ``String`` also as a
    :class:`TypedAttribute`, so copies carry it unchanged. Entries without a value are skipped."""
    strings: dict[str, str] = {}
    typed: dict[str, TypedAttribute] = {}
    for name, data_type, value in received:
        if value is None:
            continue
        if (data_type == "String" or data_type.startswith("String.")) and isinstance(value, str):
            strings[name] = value
        if data_type != "String":
            typed[name] = TypedAttribute(data_type, value)
    return strings, typed


# The complement of what SQS takes, written out: a negated class over the allowed ranges means the
# same but takes ~11 ms to compile at import (a Lambda cold start pays it), this one ~0.5 ms.
_DISALLOWED: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def first_invalid_character(body: str, attributes: Mapping[str, str]) -> str | None:
    """The first character SQS refuses in a body or string attribute value (``U+FFFF``...), or None.

    SQS takes #x9, #xA, #xD, #x20–#xD7FF, #xE000–#xFFFD and #x10000–#x10FFFF only.
    """
    for text in (body, *attributes.values()):
        if found := _DISALLOWED.search(text):
            return f"U+{ord(found.group()):04X}"
    return None


def attribute_names(
    attributes: Mapping[str, str], typed_attributes: Mapping[str, TypedAttribute]
) -> set[str]:
    """Every attribute name a message carries (what SQS's ten-attribute limit counts)."""
    return set(attributes) | set(typed_attributes)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message to send.

    Attributes:
        body: the message body (UTF-8 text).
        attributes: string message attributes.
        delay: per-message delay (standard queues only, 0–900 s).
        group_id: FIFO message group id.
        deduplication_id: FIFO deduplication id.
        system_attributes: SQS message system attributes (``AWSTraceHeader``).
        typed_attributes: attributes of other data types (Number, Binary, ``String.<label>``); a
            name here is sent with this type, also when ``attributes`` has it too.
    """

    body: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    delay: timedelta = timedelta(0)
    group_id: str | None = None
    deduplication_id: str | None = None
    system_attributes: Mapping[str, str] = field(default_factory=dict)
    typed_attributes: Mapping[str, TypedAttribute] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """SQS's size of this message: body and every attribute, typed ones included (bytes)."""
        return message_size(self.body, self.attributes, self.typed_attributes)


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one entry of a send: a message id, or the error that refused it.

    Attributes:
        message_id: the queue's id for the message, when sent.
        error: why the entry failed, when it did.
        retryable: whether resending the same entry may succeed (a server-side failure).
    """

    message_id: str | None = None
    error: str | None = None
    retryable: bool = False

    @property
    def is_sent(self) -> bool:
        """True when the entry was accepted by the queue."""
        return self.message_id is not None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One received message, as every runtime hands it to the consumer core.

    Attributes:
        message_id: the queue's id for the message.
        receipt: the handle to delete it or change its visibility (SQS receipt handle).
        body: the message body.
        attributes: string message attributes.
        receive_count: how many times the message has been received, this time included.
        sent_at: when the message was first sent to the queue.
        queue: the name of the queue it came from.
        group_id: FIFO message group id.
        system_attributes: ``AWSTraceHeader`` and other system attributes, when present.
        typed_attributes: attributes whose data type is not plain ``String`` (Number, Binary,
            ``String.<label>``), as received; ``String.<label>`` values are in ``attributes`` too.
    """

    message_id: str
    receipt: str
    body: str
    attributes: Mapping[str, str]
    receive_count: int
    sent_at: datetime
    queue: str
    group_id: str | None = None
    system_attributes: Mapping[str, str] = field(default_factory=dict)
    typed_attributes: Mapping[str, TypedAttribute] = field(default_factory=dict)


_DELIVERY_DRAFT = draft_of(
    Delivery,
    "message_id",
    "receipt",
    "body",
    "attributes",
    "receive_count",
    "sent_at",
    "queue",
    "group_id",
    "system_attributes",
    "typed_attributes",
)


def build_delivery(
    message_id: str,
    receipt: str,
    body: str,
    attributes: Mapping[str, str],
    receive_count: int,
    sent_at: datetime,
    queue: str,
    group_id: str | None,
    system_attributes: Mapping[str, str],
    typed_attributes: Mapping[str, TypedAttribute],
) -> Delivery:
    """``Delivery(...)`` with every field, built for each received message at a fraction of the cost of the
    frozen ``__init__`` (see :mod:`cloudjobs.frozen`)."""
    draft = object.__new__(_DELIVERY_DRAFT)
    draft.message_id = message_id
    draft.receipt = receipt
    draft.body = body
    draft.attributes = attributes
    draft.receive_count = receive_count
    draft.sent_at = sent_at
    draft.queue = queue
    draft.group_id = group_id
    draft.system_attributes = system_attributes
    draft.typed_attributes = typed_attributes
    draft.__class__ = Delivery
    delivery: Delivery = draft
    return delivery


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """What the core needs to know of a queue's configuration.

    Attributes:
        name: the queue's name.
        url: the queue's URL (or a memory: URL).
        is_fifo: a FIFO queue (per-message delays are refused).
        max_message_size: largest body plus attributes, in bytes.
        visibility_timeout: the queue's default visibility timeout.
        max_receive_count: the redrive policy's maxReceiveCount (None without a DLQ).
        dead_letter_queue: the DLQ's name, when there is one.
        retention: how long the queue keeps a message (``MessageRetentionPeriod``; None: no limit
            known, as on the memory backend).
    """

    name: str
    url: str
    is_fifo: bool
    max_message_size: int
    visibility_timeout: timedelta
    max_receive_count: int | None
    dead_letter_queue: str | None
    retention: timedelta | None = None


class Backend(Protocol):
    """A queue with visibility timeouts, receive counts and a dead-letter queue.

    Every method may raise :class:`~cloudjobs.errors.BackendError`.
    """

    def info(self) -> QueueInfo:
        """The queue's configuration (looked up once, then cached)."""
        ...

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send up to ten messages as one batch; one result per message, in order."""
        ...

    def receive(
        self, *, max_messages: int, wait: timedelta, visibility: timedelta | None = None
    ) -> list[Delivery]:
        """Receive up to ``max_messages`` (≤ 10), waiting up to ``wait`` (≤ 20 s) for the first.

        ``visibility`` overrides the queue's visibility timeout for these messages.
        """
        ...

    def delete(self, receipts: Sequence[str]) -> list[str]:
        """Delete up to ten messages; returns the receipts that failed (gone ones count as deleted)."""
        ...

    def change_visibility(self, changes: Sequence[tuple[str, timedelta]]) -> list[str]:
        """Set up to ten messages' visibility, counted from now; returns receipts no longer in flight."""
        ...

    def dead_letter(self, delivery: Delivery, attributes: Mapping[str, str]) -> None:
        """Copy a delivery to the dead-letter queue with extra ``attributes`` (the caller deletes it).

        Raises:
            ConfigurationError: the queue has no dead-letter queue.
        """
        ...


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """A queue's approximate message counts, as SQS reports them (they lag by up to a minute).

    Attributes:
        visible: messages available to receive (``ApproximateNumberOfMessages``).
        in_flight: received and not yet deleted or visible again (``…NotVisible``).
        delayed: sent with a delay that has not passed (``…Delayed``).
    """

    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        """Every message the queue holds."""
        return self.visible + self.in_flight + self.delayed


@runtime_checkable
class Preparable(Protocol):
    """A backend or store that can build what its first request needs ahead of it."""

    def prepare(self) -> None:
        """Build clients and the like, sending no request (a worker calls it when it is built).

        Raises:
            CloudjobsError: what the first request would raise (no region, for one).
        """
        ...


@runtime_checkable
class QueueStatistics(Protocol):
    """Read-only queue administration: message counts, for metrics.

    A second protocol beside :class:`Backend`, so a runtime never depends on it: the worker reads
    counts only from a backend that has them.
    """

    def message_counts(self) -> QueueCounts:
        """The queue's approximate counts (one request).

        Raises:
            BackendError: the counts could not be read.
        """
        ...

    def dead_letter_message_counts(self) -> QueueCounts | None:
        """The dead-letter queue's approximate counts, or None when the queue has none.

        Raises:
            BackendError: the counts could not be read.
        """
        ...


@runtime_checkable
class DeadLetterAdmin(Protocol):
    """Operator access to a queue's dead-letter queue: browse, release, delete, purge.

    A second protocol beside :class:`Backend`, so a runtime never depends on it; ``jobs.dlq``
    (:mod:`cloudjobs.dlq`) builds listing, redrive and purge on it. Sending back to the source
    queue goes through :meth:`Backend.send`.

    Every method may raise :class:`~cloudjobs.errors.BackendError`, and
    :class:`~cloudjobs.errors.ConfigurationError` when the queue has no dead-letter queue.
    """

    def receive_dead_letters(self, *, max_messages: int, visibility: timedelta) -> list[Delivery]:
        """Receive up to ``max_messages`` (1–10) from the DLQ, hidden for ``visibility``.

        An empty list means the DLQ holds no visible message (the backend waits as long as it
        must to say so reliably).
        """
        ...

    def change_dead_letter_visibility(self, changes: Sequence[tuple[str, timedelta]]) -> list[str]:
        """Set up to ten DLQ messages' visibility (0 releases them); returns receipts no longer in flight."""
        ...

    def delete_dead_letters(self, receipts: Sequence[str]) -> list[str]:
        """Delete up to ten DLQ messages; returns the receipts that failed (gone ones count as deleted)."""
        ...

    def purge_dead_letters(self) -> None:
        """Delete every message in the DLQ (SQS PurgeQueue: once a minute, and it may take a minute)."""
        ...

    def dead_letter_message_counts(self) -> QueueCounts | None:
        """The DLQ's approximate counts, or None when the queue has none."""
        ...


class MoveTaskStatus(Enum):
    """The states of an SQS message move task (``ListMessageMoveTasks`` ``Status``).

    SQS's words for a task, not a job's: a ``FAILED`` or ``CANCELLED`` task leaves its messages in the
    dead-letter queue.
    """

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"

    @property
    def is_finished(self) -> bool:
        """True once the task will move nothing more."""
        return self in (MoveTaskStatus.COMPLETED, MoveTaskStatus.CANCELLED, MoveTaskStatus.FAILED)


@dataclass(frozen=True, slots=True)
class MoveTask:
    """One message move task out of the dead-letter queue, as ``ListMessageMoveTasks`` reports it.

    Attributes:
        status: where the task stands.
        messages_moved: messages moved so far (``ApproximateNumberOfMessagesMoved``).
        messages_to_move: messages in the DLQ when the task started, once SQS reports it.
        handle: the task handle (SQS returns it only while the task runs).
        failure_reason: why a ``FAILED`` task failed.
    """

    status: MoveTaskStatus
    messages_moved: int
    messages_to_move: int | None = None
    handle: str | None = None
    failure_reason: str | None = None


@runtime_checkable
class DeadLetterMover(Protocol):
    """Server-side redrive (SQS StartMessageMoveTask), for backends whose server has it.

    See https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_StartMessageMoveTask.html
    """

    def start_dead_letter_move(self, *, max_messages_per_second: int | None = None) -> str | None:
        """Start moving every DLQ message to this queue (1–500 messages/s; None: SQS chooses).

        Returns:
            The task handle, or None when the server does not offer move tasks.
        """
        ...

    def dead_letter_moves(self) -> list[MoveTask]:
        """The DLQ's recent move tasks, newest first."""
        ...

    def cancel_dead_letter_move(self, handle: str) -> None:
        """Ask a running move task to stop; what it moved stays moved (SQS CancelMessageMoveTask)."""
        ...

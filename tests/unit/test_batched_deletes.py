"""Deletes go by tens; deferred, a full batch waits for the handler that filled it (or a flush)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta

from cloudjobs import MemoryBackend
from cloudjobs.applier import BatchedDeletes
from cloudjobs.backends.base import Delivery, OutgoingMessage


class _Counting(MemoryBackend):
    """A memory queue that counts DeleteMessageBatch requests; ``gate``, when set, holds each one
    until it is set free."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.deletes: list[int] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def delete(self, receipts: Sequence[str]) -> list[str]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        self.deletes.append(len(receipts))
        return super().delete(receipts)


def _received(backend: MemoryBackend, count: int) -> list[Delivery]:
    for start in range(0, count, 10):
        backend.send(
            [OutgoingMessage(body=str(n), attributes={}) for n in range(start, min(count, start + 10))]
        )
    received: list[Delivery] = []
    while len(received) < count:
        received += backend.receive(max_messages=min(10, count - len(received)), wait=timedelta(0))
    return received


def test_a_tenth_delete_sends_its_batch_at_once() -> None:
    backend = _Counting("deletes")
    deletes = BatchedDeletes(backend)
    for delivery in _received(backend, 10):
        deletes.acknowledge(delivery)
    assert backend.deletes == [10]


def test_a_deferred_batch_waits_for_send_due() -> None:
    backend = _Counting("deletes")
    deletes = BatchedDeletes(backend, deferred=True)
    deliveries = _received(backend, 10)
    for delivery in deliveries:
        deletes.acknowledge(delivery)
    assert backend.deletes == []
    assert deletes.oldest_pending_age() is None  # nothing partial waits for the heartbeat

    deletes.send_due()
    assert backend.deletes == [10]
    deletes.send_due()
    assert backend.deletes == [10]  # sent once


def test_wait_sent_waits_for_the_batches_being_sent() -> None:
    backend = _Counting("deletes")
    deletes = BatchedDeletes(backend, deferred=True)
    for delivery in _received(backend, 10):
        deletes.acknowledge(delivery)
    backend.gate = threading.Event()
    sender = threading.Thread(target=deletes.send_due)
    sender.start()
    assert backend.entered.wait(10)  # the handler's send is under way

    flushed = threading.Event()

    def flush() -> None:
        deletes.flush()  # nothing of its own to send: it does not wait for the handler's
        deletes.wait_sent()
        flushed.set()

    flusher = threading.Thread(target=flush)
    flusher.start()
    assert not flushed.wait(0.05)  # held until the send under way returns
    backend.gate.set()
    sender.join(10)
    flusher.join(10)
    assert flushed.is_set()
    assert backend.deletes == [10]


def test_a_flush_sends_a_due_batch_nobody_sent() -> None:
    backend = _Counting("deletes")
    deletes = BatchedDeletes(backend, deferred=True)
    for delivery in _received(backend, 13):
        deletes.acknowledge(delivery)
    deletes.flush()
    assert backend.deletes == [10, 3]

"""enqueue_many sends a standard queue's batches concurrently, a FIFO queue's in order, and reports a
batch the queue refused as a whole without losing track of the others."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from cloudjobs import BatchEnqueueError, CloudJobs, ManualClock, MemoryBackend, Settings
from cloudjobs.backends.base import OutgoingMessage, SendResult
from cloudjobs.envelope import decode
from cloudjobs.errors import BackendError


class _WatchedMemory(MemoryBackend):
    """A memory queue that counts the sends in flight at once and can hold them or refuse some."""

    def __init__(self, name: str, *, clock: ManualClock, barrier: threading.Barrier | None = None) -> None:
        super().__init__(name, clock=clock)
        self._barrier = barrier
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.first_seq_per_send: list[int] = []
        self.refuse_seq: set[int] = set()

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        seqs = [_seq(message) for message in messages]
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.first_seq_per_send.append(seqs[0])
        try:
            if self._barrier is not None:
                self._barrier.wait(timeout=10)
            if self.refuse_seq & set(seqs):
                raise BackendError("the queue refused the request", queue=self.name)
            return super().send(messages)
        finally:
            with self._lock:
                self.in_flight -= 1


def _seq(message: OutgoingMessage) -> int:
    payload = decode(message.body).payload
    assert isinstance(payload, dict)
    seq = payload["seq"]
    assert isinstance(seq, int)
    return seq


def _jobs(backend: MemoryBackend, send_concurrency: int | None = None) -> CloudJobs:
    settings = Settings(_env_file=None)
    if send_concurrency is not None:
        settings = settings.model_copy(update={"send_concurrency": send_concurrency})
    jobs = CloudJobs(settings=settings, backend=backend)
    jobs.job("noop")(lambda payload: None)
    return jobs


def _items(count: int) -> list[tuple[str, dict[str, int]]]:
    return [("noop", {"seq": seq}) for seq in range(count)]


@pytest.mark.parametrize("concurrency", [4, 6])
def test_a_standard_queues_batches_are_in_flight_together(concurrency: int) -> None:
    # Every send waits until `concurrency` of them are in flight: one at a time would time out.
    backend = _WatchedMemory("jobs", clock=ManualClock(), barrier=threading.Barrier(concurrency))
    # 4 is the default
    ids = _jobs(backend, None if concurrency == 4 else concurrency).enqueue_many(_items(10 * concurrency))

    assert backend.most_in_flight == concurrency
    assert len(ids) == len(set(ids)) == 10 * concurrency
    assert backend.message_counts().visible == 10 * concurrency


def test_a_send_concurrency_of_one_sends_one_batch_after_another() -> None:
    backend = _WatchedMemory("jobs", clock=ManualClock())

    _jobs(backend, send_concurrency=1).enqueue_many(_items(45))

    assert backend.most_in_flight == 1
    assert backend.first_seq_per_send == [0, 10, 20, 30, 40]


def test_a_fifo_queues_batches_go_one_after_another_in_order() -> None:
    backend = _WatchedMemory("jobs.fifo", clock=ManualClock())

    _jobs(backend).enqueue_many(_items(45))

    assert backend.most_in_flight == 1
    assert backend.first_seq_per_send == [0, 10, 20, 30, 40]


def test_a_batch_refused_as_a_whole_fails_its_entries_and_the_others_are_reported_sent() -> None:
    backend = _WatchedMemory("jobs", clock=ManualClock())
    backend.refuse_seq = {25}

    with pytest.raises(BatchEnqueueError) as caught:
        _jobs(backend).enqueue_many(_items(40))

    assert sorted(caught.value.failures) == list(range(20, 30))
    assert all("refused" in error for error in caught.value.failures.values())
    assert [job_id is None for job_id in caught.value.sent] == [20 <= seq < 30 for seq in range(40)]
    assert backend.message_counts().visible == 30


def test_when_every_batch_is_refused_the_queues_error_is_raised() -> None:
    backend = _WatchedMemory("jobs", clock=ManualClock())
    backend.refuse_seq = set(range(30))

    with pytest.raises(BackendError, match="refused"):
        _jobs(backend).enqueue_many(_items(30))

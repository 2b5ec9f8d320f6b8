"""enqueue_many sends a standard queue's batches concurrently when its round trips wait on the
network, one after another otherwise and on a FIFO queue, and reports a batch the queue refused as a
whole without losing track of the others."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from cloudjobs import BatchEnqueueError, CloudJobs, ManualClock, MemoryBackend, Settings
from cloudjobs.backends.base import OutgoingMessage, SendResult
from cloudjobs.envelope import decode
from cloudjobs.errors import BackendError
from cloudjobs.latency import is_latency_bound


class _WatchedMemory(MemoryBackend):
    """A memory queue that counts the sends in flight at once and can hold them or refuse some."""

    def __init__(
        self,
        name: str,
        *,
        clock: ManualClock,
        round_trip: float = 0.0,
        barrier: threading.Barrier | None = None,
    ) -> None:
        super().__init__(name, clock=clock)
        self._round_trip = round_trip
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
            if self._round_trip:
                time.sleep(self._round_trip)  # the network's share of a round trip, not a wait for an event
            if self._barrier is not None and len(self.first_seq_per_send) > 1:
                # Every send after the first waits until the barrier's parties are all in flight.
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


@pytest.mark.parametrize("concurrency", [None, 2, 6])
def test_when_round_trips_wait_on_the_network_a_standard_queues_batches_are_in_flight_together(
    concurrency: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After the first batch, every send waits until `concurrency` of them are in flight: one at a
    # time would time out.
    parties = concurrency or 4  # the default
    monkeypatch.setattr("cloudjobs.producer.is_latency_bound", lambda *, waited, cpu: True)
    backend = _WatchedMemory("jobs", clock=ManualClock(), round_trip=0.02, barrier=threading.Barrier(parties))

    ids = _jobs(backend, concurrency).enqueue_many(_items(10 + 10 * parties))

    assert backend.most_in_flight == parties
    assert backend.first_seq_per_send[0] == 0  # the first batch went alone, timed
    assert len(ids) == len(set(ids)) == 10 + 10 * parties
    assert backend.message_counts().visible == 10 + 10 * parties


@pytest.mark.parametrize(
    ("queue", "send_concurrency", "latency_bound"),
    [
        ("jobs", 8, False),  # a local server answering at once
        ("jobs", 1, True),  # concurrency 1, even over a slow network
        ("jobs.fifo", 8, True),  # a FIFO queue keeps its order, however slow the network
    ],
)
def test_batches_go_one_after_another_in_order_unless_concurrency_pays(
    queue: str, send_concurrency: int, latency_bound: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Latency decided by the rule, not by this machine's timing.
    monkeypatch.setattr("cloudjobs.producer.is_latency_bound", lambda *, waited, cpu: latency_bound)
    backend = _WatchedMemory(queue, clock=ManualClock())

    _jobs(backend, send_concurrency=send_concurrency).enqueue_many(_items(45))

    assert backend.most_in_flight == 1
    assert backend.first_seq_per_send == [0, 10, 20, 30, 40]


@pytest.mark.parametrize(
    ("waited", "cpu", "expected"),
    [
        (0.015, 0.0015, True),  # a region's round trip
        (0.002, 0.0015, False),  # a local server
        (0.006, 0.003, False),  # waited past 4 ms but not four times its CPU: a busy local server
        (0.003, 0.0001, False),  # under 4 ms
    ],
)
def test_a_round_trip_is_latency_bound_when_it_waited_long_and_far_longer_than_it_computed(
    waited: float, cpu: float, expected: bool
) -> None:
    assert is_latency_bound(waited=waited, cpu=cpu) is expected


def test_a_batch_refused_as_a_whole_fails_its_entries_and_the_others_are_reported_sent() -> None:
    backend = _WatchedMemory("jobs", clock=ManualClock(), round_trip=0.01)
    backend.refuse_seq = {25}

    with pytest.raises(BatchEnqueueError) as caught:
        _jobs(backend, send_concurrency=4).enqueue_many(_items(40))

    assert sorted(caught.value.failures) == list(range(20, 30))
    assert all("refused" in error for error in caught.value.failures.values())
    assert [job_id is None for job_id in caught.value.sent] == [20 <= seq < 30 for seq in range(40)]
    assert backend.message_counts().visible == 30


def test_when_the_first_batch_is_refused_the_queues_error_is_raised() -> None:
    backend = _WatchedMemory("jobs", clock=ManualClock(), round_trip=0.01)
    backend.refuse_seq = set(range(30))

    with pytest.raises(BackendError, match="refused"):
        _jobs(backend, send_concurrency=4).enqueue_many(_items(30))

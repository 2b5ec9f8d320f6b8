"""Delays past a hop, on both backends with a real worker: a delayed job runs once, not before it
is due, as its first attempt, and a crash between a hop's re-send and its delete still runs an
idempotent job once. Hops are shortened to 2 s here (``hop_seconds``); on AWS they are 900 s."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta

from cloudjobs import CloudJobs, Job
from cloudjobs.backends.base import Backend, Delivery, OutgoingMessage, QueueInfo, SendResult
from tests.behaviour.conftest import Harness, running, wait_for


class _LoseOneHopDelete:
    """A backend that loses the first delete of a message carrying a due time, as a process killed
    between a hop's send and its delete would: the original comes back after its visibility."""

    def __init__(self, inner: Backend) -> None:
        self._inner = inner
        self._hops: set[str] = set()
        self._lock = threading.Lock()
        self.lost: list[str] = []

    def info(self) -> QueueInfo:
        return self._inner.info()

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        return self._inner.send(messages)

    def receive(
        self, *, max_messages: int, wait: timedelta, visibility: timedelta | None = None
    ) -> list[Delivery]:
        deliveries = self._inner.receive(max_messages=max_messages, wait=wait, visibility=visibility)
        with self._lock:
            self._hops.update(d.receipt for d in deliveries if "due_at" in json.loads(d.body))
        return deliveries

    def delete(self, receipts: Sequence[str]) -> list[str]:
        with self._lock:
            if not self.lost and self._hops.intersection(receipts):
                self.lost = list(receipts)
                return []
        return self._inner.delete(receipts)

    def change_visibility(self, changes: Sequence[tuple[str, timedelta]]) -> list[str]:
        return self._inner.change_visibility(changes)

    def dead_letter(self, delivery: Delivery, attributes: Mapping[str, str]) -> None:
        self._inner.dead_letter(delivery, attributes)


def test_a_delayed_idempotent_job_runs_once_when_due_despite_a_lost_hop_delete(harness: Harness) -> None:
    built = harness.app(with_store=True, hop_seconds=2, max_receive_count=2, visibility_timeout_seconds=2)
    backend = _LoseOneHopDelete(built.backend)
    jobs = CloudJobs(settings=built.settings, backend=backend, idempotency_store=built.idempotency_store)
    runs: list[tuple[float, int]] = []

    @jobs.job("remind", idempotent=True)
    def remind(payload: dict[str, str], job: Job) -> None:
        runs.append((time.monotonic(), job.attempt))

    enqueued = time.monotonic()
    remind.enqueue({}, delay=9)
    with running(jobs, concurrency=2) as worker:
        wait_for(lambda: worker.counts["completed"] >= 1, message="the delayed job")
        wait_for(lambda: bool(backend.lost), message="the lost delete")
        # The duplicate the lost delete left behind is due too: it must be acknowledged, not run.
        wait_for(lambda: worker.counts["completed"] >= 2, message="the duplicate")

    [(ran_at, attempt)] = runs
    assert ran_at - enqueued >= 9
    assert attempt == 1
    assert worker.counts["requeued"] >= 2

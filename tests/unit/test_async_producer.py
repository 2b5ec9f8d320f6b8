"""The async producer: same checks as enqueue, sends in a worker thread, the event loop never blocked."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta

import pytest

from cloudjobs import CloudJobs, ManualClock, MemoryBackend, PayloadValidationError, Settings
from cloudjobs.backends.base import OutgoingMessage, SendResult
from cloudjobs.envelope import decode


class _GatedBackend(MemoryBackend):
    """A memory queue whose sends wait until ``gate`` opens, recording the sending thread."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__("jobs", clock=clock)
        self.gate = threading.Event()
        self.sent_from: list[int] = []
        self.on_send: Callable[[], None] = lambda: None

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        self.sent_from.append(threading.get_ident())
        self.on_send()
        assert self.gate.wait(timeout=10), "the gate never opened"
        return super().send(messages)


def test_enqueue_async_sends_in_another_thread_while_the_loop_keeps_running(clock: ManualClock) -> None:
    backend = _GatedBackend(clock)
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=clock)

    @jobs.job("report")
    def report(payload: dict[str, int]) -> None: ...

    async def scenario() -> str:
        loop = asyncio.get_running_loop()
        sending_started = asyncio.Event()

        def on_send() -> None:
            loop.call_soon_threadsafe(sending_started.set)

        backend.on_send = on_send
        sending = asyncio.create_task(jobs.enqueue_async("report", {"n": 1}))
        # The send is held by the gate; the loop still runs this coroutine, which opens it.
        await sending_started.wait()
        assert not sending.done()
        backend.gate.set()
        return await sending

    job_id = asyncio.run(scenario())

    assert backend.sent_from
    assert backend.sent_from[0] != threading.get_ident()
    [delivery] = backend.receive(max_messages=10, wait=timedelta(0))
    envelope = decode(delivery.body)
    assert (envelope.id, envelope.type, envelope.payload) == (job_id, "report", {"n": 1})


def test_enqueue_many_async_returns_ids_in_order(jobs: CloudJobs, backend: MemoryBackend) -> None:
    @jobs.job("report")
    def report(payload: dict[str, int]) -> None: ...

    job_ids = asyncio.run(jobs.enqueue_many_async([("report", {"n": n}) for n in range(12)]))

    received = backend.receive(max_messages=10, wait=timedelta(0))
    received += backend.receive(max_messages=10, wait=timedelta(0))
    by_id = {decode(delivery.body).id: decode(delivery.body).payload for delivery in received}
    assert len(job_ids) == 12
    assert [by_id[job_id] for job_id in job_ids] == [{"n": n} for n in range(12)]
    assert asyncio.run(jobs.enqueue_many_async([])) == []


def test_enqueue_async_validates_before_anything_is_sent(jobs: CloudJobs, backend: MemoryBackend) -> None:
    @jobs.job("report")
    def report(payload: dict[str, int]) -> None: ...

    with pytest.raises(PayloadValidationError):
        asyncio.run(jobs.enqueue_async("report", {"n": "not a number"}))
    assert len(backend) == 0

"""Checked now, sent later: ``check_enqueue`` builds a job without sending it, and
``Producer.resume`` sends that very message later, its delay counted from the enqueue."""

from __future__ import annotations

from datetime import timedelta

from cloudjobs import CloudJobs, ManualClock, MemoryBackend
from cloudjobs.envelope import decode


def test_a_job_checked_now_and_resumed_later_is_the_message_enqueue_would_have_sent() -> None:
    clock = ManualClock()
    backend = MemoryBackend(clock=clock)
    jobs = CloudJobs(backend=backend, clock=clock)
    enqueued_at = clock.now()

    share = jobs.check_enqueue("remind", {"order": "o-1"}, delay=30, idempotency_key="o-1")
    share.jobs.trace.finish()
    [stored] = share.jobs.stored
    assert backend.messages() == []
    clock.advance(12)
    producer = jobs.producer_of(share.queue)
    job_ids = producer.send(producer.resume([stored]))

    [message] = backend.messages()
    assert job_ids == [stored.envelope.id] == [decode(message.body).id]
    assert message.body == stored.message.body
    assert dict(message.attributes) == dict(stored.message.attributes)
    assert decode(message.body).enqueued_at == enqueued_at
    assert message.visible_at == enqueued_at + timedelta(seconds=30)


def test_a_job_resumed_after_its_delay_is_sent_without_one() -> None:
    clock = ManualClock()
    backend = MemoryBackend(clock=clock)
    jobs = CloudJobs(backend=backend, clock=clock)
    share = jobs.check_enqueue("remind", {"order": "o-1"}, delay=5)
    share.jobs.trace.finish()
    clock.advance(60)
    producer = jobs.producer_of(share.queue)

    producer.send(producer.resume(share.jobs.stored))

    [message] = backend.messages()
    assert message.visible_at == clock.now()

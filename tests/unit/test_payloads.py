"""Payloads of any size on the memory backend with the memory payload store: offloading at enqueue,
reading back in the pipeline, missing bodies, deletion after completion, hops, redrives, purges."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from cloudjobs import CloudJobs, Job, Settings
from cloudjobs.backends.base import MAX_BATCH_REQUEST_SIZE, Delivery, OutgoingMessage, TypedAttribute
from cloudjobs.backends.memory import MemoryBackend
from cloudjobs.envelope import decode
from cloudjobs.errors import PayloadTooLargeError
from cloudjobs.idempotency.memory import MemoryIdempotencyStore
from cloudjobs.outcomes import Completed, DeadLetter, Deferred
from cloudjobs.payloads.pointer import (
    ENVELOPE_ATTRIBUTE,
    LEGACY_SIZE_ATTRIBUTE,
    POINTER_CLASS,
    SIZE_ATTRIBUTE,
    Pointer,
    pointer_of,
    read_pointer,
)
from cloudjobs.payloads.store import MemoryPayloadStore, object_key

MIB = 1024 * 1024


class Export(BaseModel):
    rows: str


def _app(
    store: MemoryPayloadStore | None, *, threshold: int | None = 4096, delete: bool = False, **settings: Any
) -> tuple[CloudJobs, MemoryBackend, list[Job], list[str]]:
    backend = MemoryBackend()
    jobs = CloudJobs(
        settings=Settings(
            _env_file=None, payload_threshold_bytes=threshold, payload_delete=delete, **settings
        ),
        backend=backend,
        payload_store=store,
        idempotency_store=MemoryIdempotencyStore(clock=backend),
    )
    runs: list[Job] = []
    seen: list[str] = []

    @jobs.job("export", idempotent=True)
    def export(payload: Export, job: Job) -> int:
        runs.append(job)
        seen.append(payload.rows)
        return len(payload.rows)

    return jobs, backend, runs, seen


def _only_message(backend: MemoryBackend) -> Any:
    (message,) = backend.messages()
    return message


def test_a_body_over_the_threshold_is_stored_and_the_message_carries_a_pointer() -> None:
    store = MemoryPayloadStore("bodies")
    jobs, backend, _, _ = _app(store)
    job_id = jobs.enqueue("export", Export(rows="x" * 10_000))

    message = _only_message(backend)
    pointer = read_pointer(message.body)
    assert pointer == Pointer("bodies", object_key("export", job_id))
    assert json.loads(message.body)[0] == POINTER_CLASS
    stored = store.get(pointer)
    assert decode(stored.decode()).payload == {"rows": "x" * 10_000}
    assert message.typed_attributes[SIZE_ATTRIBUTE] == TypedAttribute("Number", str(len(stored)))
    assert message.attributes["cloudjobs.id"] == job_id  # tools still see the job without the body

    jobs.enqueue("export", Export(rows="small"))
    assert len(store.keys()) == 1  # under the threshold: the body travels in the message


def test_a_five_mib_payload_round_trips_and_the_handler_never_sees_the_pointer() -> None:
    store = MemoryPayloadStore()
    jobs, _, runs, seen = _app(store, threshold=None)  # the queue's own limit (1 MiB)
    rows = "0123456789" * (5 * MIB // 10)
    job_id = jobs.enqueue("export", Export(rows=rows))
    report = jobs.drain()
    assert report.completed == 1
    assert seen == [rows]
    assert [run.id for run in runs] == [job_id]
    assert runs[0].attempt == 1


def test_without_a_store_an_oversized_body_still_raises_payload_too_large() -> None:
    jobs, backend, _, _ = _app(None, threshold=None)
    with pytest.raises(PayloadTooLargeError):
        jobs.enqueue("export", Export(rows="x" * (2 * MIB)))
    assert backend.messages() == []


def test_enqueue_many_offloads_per_entry_and_no_batch_exceeds_the_request_limit() -> None:
    store = MemoryPayloadStore()
    jobs, backend, _, seen = _app(store, threshold=None)
    sent: list[list[OutgoingMessage]] = []
    send = backend.send

    def recording_send(messages: Any) -> Any:
        sent.append(list(messages))
        return send(messages)

    backend.send = recording_send  # type: ignore[method-assign]
    # Each body fits the queue on its own (700 KiB); two together would pass the batch's 1 MiB.
    jobs.enqueue_many([("export", Export(rows=str(n) * 700 * 1024)) for n in range(3)])
    assert all(sum(len(m.body.encode()) for m in batch) <= MAX_BATCH_REQUEST_SIZE for batch in sent)
    assert len(backend.messages()) == 3
    # Bodies that do not fit the queue go to the store, per entry.
    jobs.enqueue_many([("export", Export(rows="y" * (2 * MIB))), ("export", Export(rows="small"))])
    assert len(store.keys()) == 1
    jobs.drain()
    assert len(seen) == 5


def test_a_missing_body_dead_letters_the_job_with_its_reason_at_once() -> None:
    store = MemoryPayloadStore()
    jobs, backend, runs, _ = _app(store)
    job_id = jobs.enqueue("export", Export(rows="x" * 10_000))
    store.delete(read_pointer(_only_message(backend).body) or Pointer("", ""))
    report = jobs.drain()
    assert runs == []
    ((_, outcome),) = report.outcomes
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "payload_missing"
    assert outcome.attempt == 1  # not retried first: the body will not come back
    assert outcome.job_id == job_id
    assert jobs.dlq.list()[0].reason == "payload_missing"


def test_a_pointer_without_a_store_is_dead_lettered_naming_the_setting() -> None:
    store = MemoryPayloadStore()
    producer, backend, _, _ = _app(store)
    producer.enqueue("export", Export(rows="x" * 10_000))
    consumer, _, runs, _ = _app(None)
    outcome = consumer.consumer_on(backend).process(backend.receive(max_messages=1, wait=timedelta(0))[0])
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "payload_missing"
    assert "CLOUDJOBS_PAYLOAD_BUCKET" in outcome.error
    assert runs == []


def test_deleting_after_completion_acknowledges_a_redelivery_whose_body_is_gone() -> None:
    store = MemoryPayloadStore()
    jobs, backend, runs, _ = _app(store, delete=True)
    jobs.enqueue("export", Export(rows="x" * 10_000))
    delivery = backend.receive(max_messages=1, wait=timedelta(0))[0]
    consumer = jobs.consumer_on(backend)
    assert isinstance(consumer.process(delivery), Completed)
    assert store.keys() == []  # deleted once its record said completed
    # The message's delete was lost: it comes back, its body gone, its record completed.
    again = consumer.process(delivery)
    assert isinstance(again, Completed)
    assert len(runs) == 1


def test_a_long_delayed_offloaded_job_hops_on_its_pointer_and_runs_once_when_due() -> None:
    store = MemoryPayloadStore()
    jobs, backend, runs, _ = _app(store, hop_seconds=60, max_attempts=2)
    backend.max_receive_count = 2
    job_id = jobs.enqueue("export", Export(rows="x" * 10_000), delay=timedelta(hours=2))
    backend.advance(timedelta(minutes=1))
    hop = jobs.consumer_on(backend).process(backend.receive(max_messages=1, wait=timedelta(0))[0])
    assert isinstance(hop, Deferred)
    assert hop.requeue is not None
    assert read_pointer(hop.requeue.body) is not None  # the copy points at the same body
    assert set(json.loads(hop.requeue.attributes[ENVELOPE_ATTRIBUTE])) == {
        "attempt_offset",
        "due_at",
        "redrive_count",
    }
    report = jobs.drain()
    assert [run.id for run in runs] == [job_id]
    assert runs[0].attempt == 1  # attempts count from the due time
    assert report.counts["requeued"] >= 2  # re-sent copies, each on the same pointer
    assert len(store.keys()) == 1  # no hop wrote the body again


def test_a_redriven_offloaded_job_keeps_its_pointer_and_counts_the_redrive() -> None:
    store = MemoryPayloadStore()
    jobs, backend, runs, _ = _app(store)
    fail = [True]

    @jobs.job("flaky")
    def flaky(payload: Export, job: Job) -> None:
        if fail[0]:
            raise ValueError("not yet")
        runs.append(job)

    jobs.enqueue("flaky", Export(rows="x" * 10_000))
    jobs.drain()
    assert jobs.dlq.list()[0].type == "flaky"
    fail[0] = False
    report = jobs.dlq.redrive()
    assert report.moved == 1
    message = _only_message(backend)
    assert read_pointer(message.body) is not None
    assert json.loads(message.attributes[ENVELOPE_ATTRIBUTE]) == {"attempt_offset": 0, "redrive_count": 1}
    jobs.drain()
    assert len(runs) == 1
    assert runs[0].envelope.redrive_count == 1
    assert runs[0].attempt == 1


def test_purging_dead_letters_deletes_their_stored_bodies() -> None:
    store = MemoryPayloadStore()
    jobs, _, _, _ = _app(store)

    @jobs.job("broken")
    def broken(payload: Export) -> None:
        raise ValueError("always")

    jobs.enqueue("broken", Export(rows="x" * 10_000))
    jobs.enqueue("broken", Export(rows="small"))
    jobs.drain()
    assert len(store.keys()) == 1
    assert jobs.dlq.purge() == 2
    assert store.keys() == []


def test_the_legacy_size_attribute_is_read_too() -> None:
    store = MemoryPayloadStore()
    jobs, backend, _, seen = _app(store)
    envelope_body = json.dumps(
        {
            "cloudjobs": 1,
            "id": "legacy-1",
            "type": "export",
            "payload": {"rows": "from java"},
            "correlation_id": "c",
            "enqueued_at": "2026-12-02T12:00:00Z",
        }
    )
    pointer = store.put("legacy/1", envelope_body.encode())
    backend.send(
        [
            OutgoingMessage(
                body=json.dumps(
                    [
                        "com.amazon.sqs.javamessaging.MessageS3Pointer",
                        {"s3BucketName": pointer.bucket, "s3Key": pointer.key},
                    ]
                ),
                attributes={},
                typed_attributes={LEGACY_SIZE_ATTRIBUTE: TypedAttribute("Number", str(len(envelope_body)))},
            )
        ]
    )
    jobs.drain()
    assert seen == ["from java"]


def test_a_message_that_only_looks_like_a_pointer_is_its_own_body() -> None:
    # Without the size attribute a pointer-shaped body is an ordinary (foreign) message.
    delivery = Delivery(
        message_id="m",
        receipt="r",
        body=json.dumps([POINTER_CLASS, {"s3BucketName": "b", "s3Key": "k"}]),
        attributes={},
        receive_count=1,
        sent_at=MemoryBackend().now(),
        queue="jobs",
    )
    assert pointer_of(delivery) is None

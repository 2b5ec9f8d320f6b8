"""Number, Binary and custom-typed message attributes: read as received, carried unchanged by copies."""

from __future__ import annotations

import base64
from datetime import timedelta

from cloudjobs import CloudJobs, Deferred, ManualClock, MemoryBackend, MemoryIdempotencyStore, Settings
from cloudjobs.backends.base import OutgoingMessage, TypedAttribute, message_size
from cloudjobs.backends.copies import dead_letter_attributes_within
from cloudjobs.envelope import DEAD_LETTER_ATTRIBUTE
from cloudjobs.idempotency.base import Claim, payload_hash, store_key
from cloudjobs.runtimes.lambda_events import SqsRecord, delivery_from_record

TYPED = {
    "amount": TypedAttribute("Number", "42.5"),
    "signature": TypedAttribute("Binary", b"\x00\xff"),
    "region": TypedAttribute("String.region", "eu"),
}


def test_a_lambda_record_s_typed_attributes_are_read_as_received() -> None:
    record: SqsRecord = {
        "messageId": "m",
        "receiptHandle": "r",
        "body": "{}",
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
        "messageAttributes": {
            "plain": {"dataType": "String", "stringValue": "p"},
            "amount": {"dataType": "Number", "stringValue": "42.5"},
            "signature": {"dataType": "Binary", "binaryValue": base64.b64encode(b"\x00\xff").decode()},
            "region": {"dataType": "String.region", "stringValue": "eu"},
        },
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:jobs",
        "awsRegion": "eu-west-1",
    }

    delivery = delivery_from_record(record)

    assert delivery.attributes == {"plain": "p", "region": "eu"}
    assert delivery.typed_attributes == TYPED


def test_the_re_send_near_the_redrive_threshold_keeps_typed_attributes(clock: ManualClock) -> None:
    backend = MemoryBackend("jobs", clock=clock, max_receive_count=3)
    store = MemoryIdempotencyStore(clock=clock)
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=clock, idempotency_store=store)

    @jobs.job("held", idempotency_key="k")
    def held(payload: dict[str, str]) -> None: ...

    job_id = held.enqueue({"k": "1"})
    # Another worker holds the lease: the delivery is deferred, and near the threshold re-sent.
    claim = Claim(
        key=store_key("held", "1"),
        job_id=job_id,
        job_type="held",
        payload_hash=payload_hash("held", {"k": "1"}),
    )
    store.acquire(claim, lease=timedelta(minutes=5), retention=timedelta(days=1))
    [message] = backend.messages()
    stored = backend._messages[message.message_id]
    stored.typed_attributes = dict(TYPED)
    stored.receive_count = 2
    [delivery] = backend.receive(max_messages=1, wait=timedelta(0))

    outcome = jobs.consumer().process(delivery)

    assert isinstance(outcome, Deferred)
    assert outcome.requeue is not None
    assert outcome.requeue.typed_attributes == TYPED


def test_past_ten_attributes_a_dead_letter_copy_drops_the_lowest_ranked_typed_ones_first(
    clock: ManualClock,
) -> None:
    backend = MemoryBackend("jobs", clock=clock)
    strings = {f"cloudjobs.field{n}": "v" for n in range(7)}
    backend.send([OutgoingMessage(body="b", attributes=strings, typed_attributes=TYPED)])
    [delivery] = backend.receive(max_messages=1, wait=timedelta(0))

    kept, typed = dead_letter_attributes_within(delivery, {DEAD_LETTER_ATTRIBUTE: "{}"}, max_size=1 << 20)

    assert len(set(kept) | set(typed)) == 10
    assert DEAD_LETTER_ATTRIBUTE in kept
    assert set(strings) <= set(kept)  # earlier among equals: the typed ones go first


def test_a_copy_that_cannot_fit_its_record_is_sent_without_it(clock: ManualClock) -> None:
    backend = MemoryBackend("jobs", clock=clock)
    backend.send([OutgoingMessage(body="x" * 900)])
    [delivery] = backend.receive(max_messages=1, wait=timedelta(0))
    record = {DEAD_LETTER_ATTRIBUTE: '{"reason":"permanent_error","error":"' + "e" * 300 + '"}'}

    kept, typed = dead_letter_attributes_within(delivery, record, max_size=1024)

    assert DEAD_LETTER_ATTRIBUTE not in kept
    assert message_size(delivery.body, kept, typed) <= 1024


def test_a_record_over_the_size_gives_up_its_traceback_then_error_text(clock: ManualClock) -> None:
    backend = MemoryBackend("jobs", clock=clock)
    backend.send([OutgoingMessage(body="x" * 300)])
    [delivery] = backend.receive(max_messages=1, wait=timedelta(0))
    record = {
        DEAD_LETTER_ATTRIBUTE: '{"reason":"r","error":"' + "e" * 800 + '","traceback":"' + "t" * 2000 + '"}'
    }

    kept, typed = dead_letter_attributes_within(delivery, record, max_size=900)

    assert message_size(delivery.body, kept, typed) <= 900
    shrunk = kept[DEAD_LETTER_ATTRIBUTE]
    assert "traceback" not in shrunk
    assert '"reason":"r"' in shrunk
    assert shrunk.endswith('..."}')

"""The Lambda runtime on real-shaped SQS events built from messages received from a MemoryBackend."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta

import pytest
from pydantic import BaseModel, JsonValue

from cloudjobs import (
    BackendError,
    CloudJobs,
    ConfigurationError,
    Delivery,
    Job,
    ManualClock,
    MemoryBackend,
    MemoryIdempotencyStore,
    PermanentError,
    RetryableError,
    Settings,
)
from cloudjobs.backends.base import MAX_BATCH_ENTRIES, OutgoingMessage
from cloudjobs.run_lease import LEASE_MARGIN
from cloudjobs.runtimes.aws_lambda import FifoRule, LambdaHandler
from cloudjobs.runtimes.lambda_events import (
    LambdaContext,
    PartialBatchResponse,
    SqsEvent,
    SqsMessageAttribute,
    SqsRecord,
    SqsRecordAttributes,
)
from tests.fresh import run_fresh

ACCOUNT = "123456789012"
REGION = "eu-west-1"


class Item(BaseModel):
    number: int


class Order(BaseModel):
    order: str


# -- events as the event source mapping builds them ---------------------------------------------------


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def record_of(delivery: Delivery, *, queue: str | None = None) -> SqsRecord:
    """The record Lambda hands over for a message it received (fields and spelling as AWS sends them)."""
    attributes: SqsRecordAttributes = {
        "ApproximateReceiveCount": str(delivery.receive_count),
        "SentTimestamp": str(int(delivery.sent_at.timestamp() * 1000)),
        "SenderId": "AROAEXAMPLEID:producer",
        "ApproximateFirstReceiveTimestamp": str(int(delivery.sent_at.timestamp() * 1000) + 5),
    }
    if "AWSTraceHeader" in delivery.system_attributes:
        attributes["AWSTraceHeader"] = delivery.system_attributes["AWSTraceHeader"]
    if delivery.group_id is not None:
        attributes["MessageGroupId"] = delivery.group_id
        attributes["MessageDeduplicationId"] = delivery.message_id
        attributes["SequenceNumber"] = str(18_800_000_000_000_000_000 + delivery.receive_count)
    message_attributes: dict[str, SqsMessageAttribute] = {
        name: {"stringValue": value, "stringListValues": [], "binaryListValues": [], "dataType": "String"}
        for name, value in delivery.attributes.items()
    }
    return {
        "messageId": delivery.message_id,
        "receiptHandle": delivery.receipt,
        "body": delivery.body,
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": _md5(delivery.body),
        "md5OfMessageAttributes": _md5(json.dumps(message_attributes)) if message_attributes else None,
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue or delivery.queue}",
        "awsRegion": REGION,
    }


def receive_all(backend: MemoryBackend) -> list[Delivery]:
    """Receive until nothing more is visible (the event source mapping gathering a batch)."""
    deliveries: list[Delivery] = []
    while batch := backend.receive(max_messages=MAX_BATCH_ENTRIES, wait=timedelta(0)):
        deliveries.extend(batch)
    return deliveries


def event_of(deliveries: Sequence[Delivery]) -> SqsEvent:
    return {"Records": [record_of(delivery) for delivery in deliveries]}


class FakeContext:
    """Lambda's context: a fixed time budget, or one that a test spends as it goes."""

    def __init__(self, remaining_ms: int = 60_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def build_and_call(
    handler: LambdaHandler, deliveries: Sequence[Delivery], context: LambdaContext | None = None
) -> PartialBatchResponse:
    """Invoke the handler as Lambda does, with an event of these deliveries."""
    return handler(event_of(deliveries), context or FakeContext())


def reported(response: PartialBatchResponse) -> list[str]:
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def dead_letters(backend: MemoryBackend) -> list[dict[str, JsonValue]]:
    assert backend.dead_letter_queue is not None
    return [
        json.loads(message.attributes["cloudjobs.dead_letter"])
        for message in backend.dead_letter_queue.messages()
    ]


def hidden_for(backend: MemoryBackend, message_id: str) -> timedelta:
    """How long from now the message stays invisible."""
    [message] = [m for m in backend.messages() if m.message_id == message_id]
    return message.visible_at - backend.now()


def app_on(
    backend: MemoryBackend, clock: ManualClock, *, idempotency_store: MemoryIdempotencyStore | None = None
) -> CloudJobs:
    return CloudJobs(
        settings=Settings(_env_file=None),
        backend=backend,
        clock=clock,
        random=lambda: 0.5,
        idempotency_store=idempotency_store,
    )


@pytest.fixture
def handlers() -> Iterator[Callable[..., LambdaHandler]]:
    """Build handlers with ``jobs.lambda_handler(...)``; their threads are stopped after the test."""
    built: list[LambdaHandler] = []

    def build(
        jobs: CloudJobs,
        *,
        fifo_rule: FifoRule | None = None,
        safety_margin: float | None = None,
        concurrency: int = 1,
    ) -> LambdaHandler:
        handler = jobs.lambda_handler(
            fifo_rule=fifo_rule, safety_margin=safety_margin, concurrency=concurrency
        )
        built.append(handler)
        return handler

    yield build
    for handler in built:
        handler.close()


class StrictBackend(MemoryBackend):
    """A memory queue that refuses batch calls of more than ten entries, as SQS does, and counts them."""

    def __init__(self, name: str, *, clock: ManualClock) -> None:
        super().__init__(name, clock=clock)
        self.visibility_batches: list[int] = []

    def change_visibility(self, changes: Sequence[tuple[str, timedelta]]) -> list[str]:
        if len(changes) > MAX_BATCH_ENTRIES:
            raise BackendError("TooManyEntriesInBatchRequest", queue=self.name)
        self.visibility_batches.append(len(changes))
        return super().change_visibility(changes)


class RefusingDeadLetterBackend(MemoryBackend):
    """A memory queue whose dead-letter queue cannot be reached."""

    def dead_letter(self, delivery: Delivery, attributes: Mapping[str, str]) -> None:
        raise BackendError("dead-letter queue unreachable", queue=self.name)


# -- standard queues ------------------------------------------------------------------------------------


def test_a_mixed_batch_reports_exactly_the_failed_records(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    backend = MemoryBackend("jobs", clock=clock)
    jobs = app_on(backend, clock)

    @jobs.job("item")
    def item(payload: Item) -> None:
        if payload.number % 3 == 0:
            raise RetryableError(f"item {payload.number} not ready", delay=timedelta(seconds=42))

    ids = jobs.enqueue_many([(item, Item(number=n)) for n in range(1, 10)])
    deliveries = receive_all(backend)
    by_job = {json.loads(d.body)["id"]: d.message_id for d in deliveries}

    response = build_and_call(handlers(jobs), deliveries)

    failed = [by_job[ids[n - 1]] for n in (3, 6, 9)]
    assert reported(response) == failed
    assert all(hidden_for(backend, message_id) == timedelta(seconds=42) for message_id in failed)


class RecordingBackend(MemoryBackend):
    """A memory queue that notes every call a handler makes to it after the records were received."""

    def __init__(self, name: str, *, clock: ManualClock) -> None:
        super().__init__(name, clock=clock)
        self.calls: list[str] = []

    def change_visibility(self, changes: Sequence[tuple[str, timedelta]]) -> list[str]:
        self.calls.append(f"change_visibility({len(changes)})")
        return super().change_visibility(changes)

    def delete(self, receipts: Sequence[str]) -> list[str]:
        self.calls.append(f"delete({len(receipts)})")
        return super().delete(receipts)

    def dead_letter(self, delivery: Delivery, attributes: Mapping[str, str]) -> None:
        self.calls.append("dead_letter")
        super().dead_letter(delivery, attributes)


def test_completed_records_are_left_to_lambda_and_only_the_others_reach_the_queue(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    backend = RecordingBackend("jobs", clock=clock)
    jobs = app_on(backend, clock)

    @jobs.job("item")
    def item(payload: Item) -> int | None:
        if payload.number == 7:
            raise RetryableError("not yet", delay=timedelta(seconds=9))
        return payload.number if payload.number % 2 else None  # results and no results

    jobs.enqueue_many([(item, Item(number=n)) for n in range(1, 7)])
    handler = handlers(jobs)

    # Six completions, some with a result: nothing to report and nothing sent.
    assert reported(build_and_call(handler, receive_all(backend))) == []
    assert backend.calls == []
    assert backend.counts() == (0, 6, 0)  # in flight: Lambda deletes them, not the handler

    # A retry among completions, in the next invocation: exactly its visibility change.
    jobs.enqueue_many([(item, Item(number=n)) for n in (7, 8)])
    deliveries = receive_all(backend)
    retried = next(d.message_id for d in deliveries if json.loads(d.body)["payload"]["number"] == 7)
    assert reported(build_and_call(handler, deliveries)) == [retried]
    assert backend.calls == ["change_visibility(1)"]
    assert hidden_for(backend, retried) == timedelta(seconds=9)


def test_a_large_batch_changes_visibility_ten_at_a_time_and_reports_every_failure(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    backend = StrictBackend("jobs", clock=clock)
    jobs = app_on(backend, clock)

    @jobs.job("item")
    def item(payload: Item) -> None:
        if payload.number % 5 != 0:  # 20 of 25 fail
            raise RetryableError("busy", delay=timedelta(seconds=30))

    jobs.enqueue_many([(item, Item(number=n)) for n in range(1, 26)])
    deliveries = receive_all(backend)
    assert len(deliveries) == 25

    response = build_and_call(handlers(jobs), deliveries)

    numbers = {d.message_id: json.loads(d.body)["payload"]["number"] for d in deliveries}
    assert sorted(numbers[m] for m in reported(response)) == [n for n in range(1, 26) if n % 5 != 0]
    assert backend.visibility_batches == [10, 10]
    assert all(hidden_for(backend, m) == timedelta(seconds=30) for m in reported(response))


def test_a_permanent_error_goes_to_the_dead_letter_queue_and_is_not_reported(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    backend = MemoryBackend("jobs", clock=clock)
    jobs = app_on(backend, clock)

    @jobs.job("item")
    def item(payload: Item) -> None:
        raise PermanentError(f"item {payload.number} can never work")

    jobs.enqueue(item, Item(number=7))

    response = build_and_call(handlers(jobs), receive_all(backend))

    assert reported(response) == []
    [letter] = dead_letters(backend)
    assert (letter["reason"], letter["job_type"]) == ("permanent_error", "item")
    assert "item 7 can never work" in str(letter["error"])


def test_a_dead_letter_that_cannot_be_sent_is_reported_so_it_stays_on_the_queue(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    backend = RefusingDeadLetterBackend("jobs", clock=clock)
    jobs = app_on(backend, clock)

    @jobs.job("item")
    def item(payload: Item) -> None:
        raise PermanentError("no")

    jobs.enqueue(item, Item(number=1))
    deliveries = receive_all(backend)

    response = build_and_call(handlers(jobs), deliveries)

    assert reported(response) == [deliveries[0].message_id]


def test_a_malformed_body_is_dead_lettered_with_its_reason_and_the_others_run(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    backend = MemoryBackend("jobs", clock=clock)
    jobs = app_on(backend, clock)
    ran: list[int] = []

    @jobs.job("item")
    def item(payload: Item) -> None:
        ran.append(payload.number)

    jobs.enqueue(item, Item(number=1))
    backend.send([OutgoingMessage(body='{"cloudjobs": 1, "type": "item"}')])
    backend.send([OutgoingMessage(body="<xml>not json</xml>")])
    jobs.enqueue(item, Item(number=2))

    response = build_and_call(handlers(jobs), receive_all(backend))

    assert reported(response) == []
    assert ran == [1, 2]
    assert sorted(str(letter["reason"]) for letter in dead_letters(backend)) == [
        "malformed_envelope",
        "unroutable",
    ]


def test_an_empty_batch_reports_nothing_and_touches_no_queue(handlers: Callable[..., LambdaHandler]) -> None:
    jobs = CloudJobs(settings=Settings(_env_file=None))  # no queue configured: any use would raise

    assert handlers(jobs)({"Records": []}, FakeContext()) == {"batchItemFailures": []}


def test_records_of_a_queue_the_app_does_not_know_are_reported_not_raised(
    clock: ManualClock, handlers: Callable[..., LambdaHandler], caplog: pytest.LogCaptureFixture
) -> None:
    backend = MemoryBackend("jobs", clock=clock)
    jobs = app_on(backend, clock)
    jobs.enqueue("item", {"number": 1})
    [delivery] = receive_all(backend)

    with caplog.at_level(logging.ERROR, logger="cloudjobs.lambda"):
        response = handlers(jobs)({"Records": [record_of(delivery, queue="other-queue")]}, FakeContext())

    assert reported(response) == [delivery.message_id]
    [error] = [r for r in caplog.records if r.name == "cloudjobs.lambda"]
    assert "'other-queue'" in error.getMessage()
    assert hidden_for(backend, delivery.message_id) == backend.visibility_timeout  # untouched


def test_a_record_reaches_the_handler_with_its_attributes_trace_header_and_receive_count(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    backend = MemoryBackend("jobs", clock=clock)
    jobs = app_on(backend, clock)
    seen: list[Job] = []

    @jobs.job("item")
    def item(payload: Item, job: Job) -> None:
        seen.append(job)

    jobs.enqueue(item, Item(number=1))
    [delivery] = receive_all(backend)
    record = record_of(delivery)
    trace_header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    record["attributes"]["AWSTraceHeader"] = trace_header
    record["attributes"]["ApproximateReceiveCount"] = "3"
    # Number and Binary attributes come as AWS sends them; only String ones reach the job.
    record["messageAttributes"]["priority"] = {
        "stringValue": "7",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "Number",
    }
    record["messageAttributes"]["blob"] = {
        "binaryValue": "AQID",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "Binary",
    }
    record["messageAttributes"]["tenant"] = {
        "stringValue": "acme",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String.tenant",
    }

    response = handlers(jobs)({"Records": [record]}, FakeContext())

    assert reported(response) == []
    [job] = seen
    assert job.attempt == 3
    assert job.message.system_attributes == {"AWSTraceHeader": trace_header}
    assert job.message.attributes == {**delivery.attributes, "tenant": "acme"}
    assert job.message.sent_at == delivery.sent_at
    assert job.correlation_id == delivery.attributes["cloudjobs.correlation_id"]


def test_when_the_time_budget_is_spent_the_rest_is_reported_released_and_not_started(
    clock: ManualClock, handlers: Callable[..., LambdaHandler], caplog: pytest.LogCaptureFixture
) -> None:
    backend = MemoryBackend("jobs", clock=clock)
    jobs = app_on(backend, clock)
    context = FakeContext(remaining_ms=20_000)
    started: list[int] = []

    @jobs.job("item")
    def item(payload: Item) -> None:
        started.append(payload.number)
        context.remaining_ms -= 6_000  # each job takes six seconds

    jobs.enqueue_many([(item, Item(number=n)) for n in range(1, 6)])
    deliveries = receive_all(backend)

    response = build_and_call(handlers(jobs, safety_margin=5), deliveries, context)

    # 20 s, 14 s and 8 s left: three jobs start (margin 5 s); with 2 s left the other two cannot.
    assert started == [1, 2, 3]
    assert reported(response) == [d.message_id for d in deliveries[3:]]
    visible, in_flight, _ = backend.counts()
    assert (visible, in_flight) == (2, 3)  # released at once for another invocation
    assert "2 of 5 records not started" in caplog.text


def test_an_invocation_started_below_the_margin_starts_nothing(
    clock: ManualClock, handlers: Callable[..., LambdaHandler], caplog: pytest.LogCaptureFixture
) -> None:
    backend = MemoryBackend("jobs", clock=clock)
    jobs = app_on(backend, clock)
    started: list[int] = []

    @jobs.job("item")
    def item(payload: Item) -> None:
        started.append(payload.number)

    jobs.enqueue_many([(item, Item(number=n)) for n in range(3)])
    deliveries = receive_all(backend)

    response = build_and_call(handlers(jobs), deliveries, FakeContext(remaining_ms=2_900))

    assert started == []
    assert reported(response) == [d.message_id for d in deliveries]
    assert "below the safety margin" in caplog.text


def test_concurrency_runs_records_of_a_standard_batch_at_once(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    backend = MemoryBackend("jobs", clock=clock)
    jobs = app_on(backend, clock)
    # Four handlers that each wait for the other three: only a concurrent run lets them all pass.
    barrier = threading.Barrier(4, timeout=10)

    @jobs.job("item")
    def item(payload: Item) -> None:
        barrier.wait()

    jobs.enqueue_many([(item, Item(number=n)) for n in range(4)])

    response = build_and_call(handlers(jobs, concurrency=4), receive_all(backend))

    assert reported(response) == []


def test_async_handlers_run_on_one_event_loop_kept_between_invocations(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    backend = MemoryBackend("jobs", clock=clock)
    jobs = app_on(backend, clock)
    loops: list[asyncio.AbstractEventLoop] = []

    @jobs.job("item")
    async def item(payload: Item) -> None:
        await asyncio.sleep(0)
        loops.append(asyncio.get_running_loop())
        if payload.number == 2:
            raise RetryableError("later")

    handler = handlers(jobs)
    jobs.enqueue(item, Item(number=1))
    first = build_and_call(handler, receive_all(backend))
    jobs.enqueue(item, Item(number=2))
    second_batch = receive_all(backend)
    second = build_and_call(handler, second_batch)

    assert reported(first) == []
    assert reported(second) == [second_batch[0].message_id]
    assert len(loops) == 2
    assert loops[0] is loops[1]


def test_a_duplicate_of_a_completed_idempotent_job_is_acknowledged_without_running(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    backend = MemoryBackend("jobs", clock=clock)
    jobs = app_on(backend, clock, idempotency_store=MemoryIdempotencyStore(clock=clock))
    runs: list[int] = []

    @jobs.job("charge", idempotent=True)
    def charge(payload: Item) -> int:
        runs.append(payload.number)
        return payload.number * 100

    handler = handlers(jobs)
    charge.enqueue(Item(number=1), idempotency_key="order-1")
    first = build_and_call(handler, receive_all(backend))
    charge.enqueue(Item(number=1), idempotency_key="order-1")
    second = build_and_call(handler, receive_all(backend))

    assert (reported(first), reported(second)) == ([], [])
    assert runs == [1]


def test_an_idempotent_record_leases_for_the_invocations_remaining_time_not_the_visibility(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    backend = MemoryBackend("jobs", clock=clock, visibility_timeout=timedelta(minutes=30))
    store = MemoryIdempotencyStore(clock=clock)
    jobs = app_on(backend, clock, idempotency_store=store)
    leases: list[timedelta] = []

    @jobs.job("charge", idempotent=True)
    def charge(payload: Item, job: Job) -> None:
        record = store.find(job.id)
        assert record is not None
        assert record.lease_expires_at is not None
        leases.append(record.lease_expires_at - clock.now())

    charge.enqueue(Item(number=1))
    build_and_call(handlers(jobs), receive_all(backend), FakeContext(remaining_ms=40_000))

    assert leases == [timedelta(seconds=40) + LEASE_MARGIN]


def test_after_a_crashed_invocation_a_duplicate_runs_once_its_time_is_up_not_after_the_visibility(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    backend = MemoryBackend("jobs", clock=clock, visibility_timeout=timedelta(minutes=30))
    store = MemoryIdempotencyStore(clock=clock, clock_skew=timedelta(seconds=1))
    jobs = app_on(backend, clock, idempotency_store=store)
    runs: list[str] = []
    frozen = threading.Event()  # the first invocation stops mid-record, as a timed-out one does
    thaw = threading.Event()

    @jobs.job("charge", idempotency_key="order")
    def charge(payload: Order) -> None:
        runs.append(payload.order)
        if not frozen.is_set():
            frozen.set()
            thaw.wait(30)

    handler = handlers(jobs)
    charge.enqueue(Order(order="o-1"))
    crashed = threading.Thread(
        target=build_and_call, args=(handler, receive_all(backend), FakeContext(remaining_ms=20_000))
    )
    crashed.start()
    try:
        assert frozen.wait(10)
        charge.enqueue(Order(order="o-1"))  # a duplicate send, delivered at once
        early = build_and_call(handler, receive_all(backend), FakeContext(remaining_ms=20_000))
        clock.advance(timedelta(seconds=20) + LEASE_MARGIN + timedelta(seconds=2))
        late = build_and_call(handler, receive_all(backend), FakeContext(remaining_ms=20_000))
    finally:
        thaw.set()
        crashed.join(10)

    assert len(reported(early)) == 1  # deferred: the crashed invocation's lease still stands
    assert reported(late) == []
    assert runs == ["o-1", "o-1"]


# -- FIFO queues ----------------------------------------------------------------------------------------


def _fifo_batch(
    clock: ManualClock, sends: Sequence[tuple[str, int]], *, failing: set[int]
) -> tuple[MemoryBackend, CloudJobs, list[int]]:
    backend = MemoryBackend("jobs.fifo", clock=clock)
    jobs = app_on(backend, clock)
    ran: list[int] = []

    @jobs.job("item")
    def item(payload: Item) -> None:
        ran.append(payload.number)
        if payload.number in failing:
            raise RetryableError("not yet", delay=timedelta(seconds=10))

    for group, number in sends:
        jobs.enqueue(item, Item(number=number), group_id=group)
    return backend, jobs, ran


def test_fifo_a_failure_holds_back_the_rest_of_its_group_and_other_groups_go_on(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    sends = [("a", 1), ("b", 10), ("a", 2), ("b", 11), ("a", 3), ("c", 20)]
    backend, jobs, ran = _fifo_batch(clock, sends, failing={1})
    deliveries = receive_all(backend)
    number_of = {d.message_id: json.loads(d.body)["payload"]["number"] for d in deliveries}

    response = build_and_call(handlers(jobs), deliveries)

    assert [number_of[m] for m in reported(response)] == [1, 2, 3]
    assert sorted(ran) == [1, 10, 11, 20]
    # The failed message waits for its backoff; the ones behind it cannot overtake it (SQS keeps
    # a group's messages back while one of them is in flight).
    assert [json.loads(d.body)["payload"]["number"] for d in receive_all(backend)] == []
    backend.advance(timedelta(seconds=10))
    assert [json.loads(d.body)["payload"]["number"] for d in receive_all(backend)] == [1, 2, 3]


def test_fifo_stop_at_first_failure_reports_every_record_after_it(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    sends = [("b", 10), ("a", 1), ("b", 11), ("a", 2), ("c", 20)]
    backend, jobs, ran = _fifo_batch(clock, sends, failing={1})
    deliveries = receive_all(backend)
    number_of = {d.message_id: json.loads(d.body)["payload"]["number"] for d in deliveries}

    response = build_and_call(handlers(jobs, fifo_rule=FifoRule.STOP_AT_FIRST_FAILURE), deliveries)

    assert [number_of[m] for m in reported(response)] == [1, 11, 2, 20]
    assert ran == [10, 1]


def test_fifo_dead_letters_do_not_hold_back_their_group(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    backend = MemoryBackend("jobs.fifo", clock=clock)
    jobs = app_on(backend, clock)
    ran: list[int] = []

    @jobs.job("item")
    def item(payload: Item) -> None:
        ran.append(payload.number)
        if payload.number == 1:
            raise PermanentError("bad item")

    for number in (1, 2, 3):
        jobs.enqueue(item, Item(number=number), group_id="a")

    response = build_and_call(handlers(jobs), receive_all(backend))

    assert reported(response) == []
    assert ran == [1, 2, 3]
    assert [letter["reason"] for letter in dead_letters(backend)] == ["permanent_error"]


def test_fifo_groups_keep_their_order_when_records_run_concurrently(
    clock: ManualClock, handlers: Callable[..., LambdaHandler]
) -> None:
    sends = [(group, number) for number in range(3) for group in ("a", "b", "c")]
    backend, jobs, ran = _fifo_batch(clock, [(g, n + 10 * ord(g)) for g, n in sends], failing=set())

    response = build_and_call(handlers(jobs, concurrency=3), receive_all(backend))

    assert reported(response) == []
    for group in "abc":
        assert [n for n in ran if n // 10 == ord(group)] == [10 * ord(group) + n for n in range(3)]


# -- cold start -----------------------------------------------------------------------------------------

HEAVY_MODULES = ("boto3", "botocore", "moto", "opentelemetry.sdk", "cloudjobs.cli")


@pytest.mark.parametrize(
    "queue_url",
    ["https://sqs.eu-west-1.amazonaws.com/123456789012/jobs", None],
    ids=["queue-url", "no-queue-url"],
)
def test_building_the_lambda_handler_loads_no_aws_sdk_moto_otel_sdk_or_cli(queue_url: str | None) -> None:
    script = (
        "import json, os, sys\n"
        + (f"os.environ['CLOUDJOBS_QUEUE_URL'] = {queue_url!r}\n" if queue_url else "")
        + "import cloudjobs, cloudjobs.runtimes.aws_lambda\n"
        "jobs = cloudjobs.CloudJobs()\n"
        "jobs.job('noop')(lambda payload: None)\n"
        "handler = jobs.lambda_handler()\n"
        f"heavy = {HEAVY_MODULES!r}\n"
        "loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy))\n"
        "print(json.dumps([type(handler).__name__, loaded]))\n"
    )

    stdout = run_fresh(script)

    assert json.loads(stdout) == ["LambdaHandler", []]


# What a consumer without a store never needs: the producer side, dead-letter administration and
# the in-memory stores load on first use.
PRODUCER_AND_OPERATOR_MODULES = (
    "cloudjobs.producer",
    "cloudjobs.producer_requests",
    "cloudjobs.sending",
    "cloudjobs.uniqueness",
    "cloudjobs.idempotency.pending",
    "cloudjobs.idempotency.memory",
    "cloudjobs.flows.memory",
    "cloudjobs.scheduling.memory",
    "cloudjobs.scheduling.registry",
    "cloudjobs.dlq",
)


def test_a_cold_start_and_its_first_batch_leave_the_producer_and_operator_modules_unloaded() -> None:
    script = (
        "import json, sys\n"
        "import cloudjobs, cloudjobs.runtimes.aws_lambda\n"
        "jobs = cloudjobs.CloudJobs(backend=cloudjobs.MemoryBackend('jobs'))\n"
        "ran = []\n"
        "jobs.job('noop')(ran.append)\n"
        "handler = jobs.lambda_handler()\n"
        "body = json.dumps({'cloudjobs': 1, 'id': 'j1', 'type': 'noop', 'payload': {'n': 1},\n"
        "    'correlation_id': 'c1', 'enqueued_at': '2026-01-01T00:00:00Z', 'idempotency_key': None,\n"
        "    'attempt_offset': 0, 'redrive_count': 0})\n"
        "record = {'messageId': 'm1', 'receiptHandle': 'r1', 'body': body, 'md5OfBody': '',\n"
        "    'attributes': {'ApproximateReceiveCount': '1', 'SentTimestamp': '1700000000000'},\n"
        "    'messageAttributes': {}, 'eventSource': 'aws:sqs', 'awsRegion': 'eu-west-1',\n"
        "    'eventSourceARN': 'arn:aws:sqs:eu-west-1:123456789012:jobs'}\n"
        "class Context:\n"
        "    def get_remaining_time_in_millis(self): return 60_000\n"
        "response = handler({'Records': [record]}, Context())\n"
        f"lazy = {PRODUCER_AND_OPERATOR_MODULES!r}\n"
        "loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in lazy))\n"
        "print(json.dumps([response, ran, loaded]))\n"
    )

    stdout = run_fresh(script)

    assert json.loads(stdout) == [{"batchItemFailures": []}, [{"n": 1}], []]


def test_opentelemetry_loads_only_when_a_record_carries_trace_context() -> None:
    # No SDK installed and no trace context: the API is never imported; the first record that carries
    # a traceparent loads it, and its handler runs inside the trace the sender started.
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    script = (
        "import json, sys\n"
        "import cloudjobs, cloudjobs.runtimes.aws_lambda\n"
        "jobs = cloudjobs.CloudJobs(backend=cloudjobs.MemoryBackend('jobs'))\n"
        "seen = []\n"
        "def handle(payload):\n"
        "    trace = sys.modules.get('opentelemetry.trace')\n"
        "    seen.append(None if trace is None else\n"
        "                format(trace.get_current_span().get_span_context().trace_id, '032x'))\n"
        "jobs.job('noop')(handle)\n"
        "handler = jobs.lambda_handler()\n"
        "def record(n, attributes):\n"
        "    body = json.dumps({'cloudjobs': 1, 'id': f'j{n}', 'type': 'noop', 'payload': {'n': n},\n"
        "        'correlation_id': 'c1', 'enqueued_at': '2026-01-01T00:00:00Z', 'idempotency_key': None,\n"
        "        'attempt_offset': 0, 'redrive_count': 0})\n"
        "    return {'messageId': f'm{n}', 'receiptHandle': f'r{n}', 'body': body, 'md5OfBody': '',\n"
        "        'attributes': {'ApproximateReceiveCount': '1', 'SentTimestamp': '1700000000000'},\n"
        "        'messageAttributes': {name: {'dataType': 'String', 'stringValue': value}\n"
        "                              for name, value in attributes.items()},\n"
        "        'eventSource': 'aws:sqs', 'awsRegion': 'eu-west-1',\n"
        "        'eventSourceARN': 'arn:aws:sqs:eu-west-1:123456789012:jobs'}\n"
        "class Context:\n"
        "    def get_remaining_time_in_millis(self): return 60_000\n"
        "loaded = lambda: any(m.startswith('opentelemetry') for m in sys.modules)\n"
        "first = handler({'Records': [record(1, {})]}, Context())\n"
        "before = loaded()\n"
        f"parent = '00-{trace_id}-00f067aa0ba902b7-01'\n"
        "second = handler({'Records': [record(2, {'traceparent': parent})]}, Context())\n"
        "print(json.dumps([first, before, second, loaded(), seen]))\n"
    )

    stdout = run_fresh(script)

    no_failures: dict[str, list[object]] = {"batchItemFailures": []}
    assert json.loads(stdout) == [no_failures, False, no_failures, True, [None, trace_id]]


# What a cold start on SQS imports without using: the idempotency store protocols and job statuses
# (no store), the memory backend, flow and schedule definitions, the log filter, difflib.
COLD_START_UNUSED_MODULES = (
    "cloudjobs.idempotency.base",
    "cloudjobs.idempotency.status",
    "cloudjobs.backends.memory",
    "cloudjobs.backends.copies",
    "cloudjobs.flows.definition",
    "cloudjobs.scheduling.definition",
    "cloudjobs.scheduling.ticks",
    "cloudjobs.telemetry.logging",
    "difflib",
)


def test_a_cold_start_on_sqs_leaves_the_modules_it_does_not_use_unloaded() -> None:
    script = (
        "import json, os, sys\n"
        "os.environ['CLOUDJOBS_QUEUE_URL'] = 'https://sqs.eu-west-1.amazonaws.com/123456789012/jobs'\n"
        "import cloudjobs, cloudjobs.runtimes.aws_lambda\n"
        "jobs = cloudjobs.CloudJobs()\n"
        "jobs.job('noop')(lambda payload: None)\n"
        "handler = jobs.lambda_handler()\n"
        f"unused = {COLD_START_UNUSED_MODULES!r}\n"
        "print(json.dumps([type(handler).__name__, sorted(m for m in unused if m in sys.modules)]))\n"
    )

    stdout = run_fresh(script)

    assert json.loads(stdout) == ["LambdaHandler", []]


def test_the_names_a_cold_start_leaves_unloaded_load_on_first_access() -> None:
    script = (
        "import json, sys, cloudjobs\n"
        "import cloudjobs.flows, cloudjobs.idempotency, cloudjobs.telemetry\n"
        "from cloudjobs import Flow, JobState, JobStatus, MemoryBackend\n"
        "from cloudjobs.backends.memory import MemoryBackend as B\n"
        "from cloudjobs.flows.definition import Flow as F, OnChildFailure as O\n"
        "from cloudjobs.idempotency.status import JobState as S, JobStatus as T\n"
        "from cloudjobs.idempotency.base import Claim as C\n"
        "from cloudjobs.scheduling.definition import CatchUp, Overlap\n"
        "from cloudjobs.scheduling.rules import CatchUp as CU, Overlap as OV\n"
        "from cloudjobs.telemetry.logging import JobLogFilter as L\n"
        "same = [Flow is F, JobState is S, JobStatus is T, MemoryBackend is B,\n"
        "        cloudjobs.flows.OnChildFailure is O, cloudjobs.idempotency.Claim is C,\n"
        "        cloudjobs.idempotency.JobStatus is T, cloudjobs.telemetry.JobLogFilter is L,\n"
        "        CatchUp is CU, Overlap is OV]\n"
        "listed = [set(m.__all__) <= set(dir(m))\n"
        "          for m in (cloudjobs, cloudjobs.flows, cloudjobs.idempotency, cloudjobs.telemetry)]\n"
        "print(json.dumps([same, listed]))\n"
    )

    stdout = run_fresh(script)

    assert json.loads(stdout) == [[True] * 10, [True] * 4]


def test_the_dead_letter_and_memory_store_names_load_on_first_access() -> None:
    script = (
        "import json, sys, cloudjobs\n"
        "before = [m in sys.modules for m in ('cloudjobs.dlq.models', 'cloudjobs.idempotency.memory')]\n"
        "from cloudjobs import DeadJob, RedriveReport, MemoryIdempotencyStore\n"
        "from cloudjobs.dlq.models import DeadJob as D, RedriveReport as R\n"
        "from cloudjobs.idempotency.memory import MemoryIdempotencyStore as M\n"
        "import cloudjobs.idempotency\n"
        "same = [DeadJob is D, RedriveReport is R, MemoryIdempotencyStore is M,\n"
        "        cloudjobs.idempotency.MemoryIdempotencyStore is M]\n"
        "print(json.dumps([before, same]))\n"
    )

    stdout = run_fresh(script)

    assert json.loads(stdout) == [[False, False], [True, True, True, True]]


def test_options_are_checked_when_the_handler_is_built(clock: ManualClock) -> None:
    jobs = app_on(MemoryBackend("jobs", clock=clock), clock)

    with pytest.raises(ConfigurationError):
        jobs.lambda_handler(concurrency=0)
    with pytest.raises(ConfigurationError):
        jobs.lambda_handler(safety_margin=-1)


# -- the example --------------------------------------------------------------------------------------


def test_the_lambda_example_retries_the_incomplete_upload_dead_letters_the_bad_format_and_sends_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from examples.lambda_consumer import app

    with app.jobs.testing() as queue:
        app.make_thumbnail.enqueue(app.Thumbnail(image_key="uploads/cat.png", image_format="png"))
        app.make_thumbnail.enqueue(app.Thumbnail(image_key="uploads/cat.bmp", image_format="bmp"))
        incomplete = app.make_thumbnail.enqueue(
            app.Thumbnail(image_key="incoming/dog.png", image_format="png")
        )
        for _ in range(2):  # the same order twice
            app.send_receipt.enqueue(app.Receipt(order_id="o-7", address="ada@example.com"))
        deliveries = receive_all(queue)
        with caplog.at_level(logging.INFO, logger=app.logger.name):
            response = build_and_call(app.handler, deliveries)
        letters = dead_letters(queue)

    [reported_id] = reported(response)
    assert json.loads(next(d.body for d in deliveries if d.message_id == reported_id))["id"] == incomplete
    assert [letter["reason"] for letter in letters] == ["permanent_error"]
    assert sum("receipt of order o-7 sent" in message for message in caplog.messages) == 1

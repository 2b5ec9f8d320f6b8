"""The producer: validated payloads, batches of ten within 1 MiB, every entry accounted for."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta

import pytest
from pydantic import BaseModel

from cloudjobs import (
    BatchEnqueueError,
    CloudJobs,
    InvalidDelayError,
    Job,
    ManualClock,
    MemoryBackend,
    PayloadTooLargeError,
    PayloadValidationError,
    Settings,
)
from cloudjobs.backends.base import Delivery, OutgoingMessage, QueueInfo, SendResult
from cloudjobs.envelope import decode


class Email(BaseModel):
    to: str
    subject: str = ""


class RecordingBackend:
    """A memory queue that records each send's batch and can refuse chosen entries.

    Entries are numbered across the whole test in the order they are sent (0-based); ``refuse`` maps an
    entry number to whether that refusal is retryable.
    """

    def __init__(self, inner: MemoryBackend, refuse: Mapping[int, bool] | None = None) -> None:
        self.inner = inner
        self.batches: list[list[OutgoingMessage]] = []
        self._refuse = dict(refuse or {})
        self._entries = 0

    def info(self) -> QueueInfo:
        return self.inner.info()

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        self.batches.append(list(messages))
        results: list[SendResult] = []
        for message in messages:
            number, self._entries = self._entries, self._entries + 1
            if number in self._refuse:
                retryable = self._refuse[number]
                results.append(SendResult(error=f"refused entry {number}", retryable=retryable))
            else:
                results.extend(self.inner.send([message]))
        return results

    def receive(
        self, *, max_messages: int, wait: timedelta, visibility: timedelta | None = None
    ) -> list[Delivery]:
        return self.inner.receive(max_messages=max_messages, wait=wait, visibility=visibility)

    def delete(self, receipts: Sequence[str]) -> list[str]:
        return self.inner.delete(receipts)

    def change_visibility(self, changes: Sequence[tuple[str, timedelta]]) -> list[str]:
        return self.inner.change_visibility(changes)

    def dead_letter(self, delivery: Delivery, attributes: Mapping[str, str]) -> None:
        self.inner.dead_letter(delivery, attributes)

    @property
    def batch_sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]


def _app(backend: MemoryBackend | RecordingBackend, clock: ManualClock, **settings: object) -> CloudJobs:
    jobs = CloudJobs(
        settings=Settings(_env_file=None, **settings),  # type: ignore[arg-type]
        backend=backend,
        clock=clock,
        random=lambda: 0.5,
    )

    @jobs.job("send-email")
    def send_email(payload: Email) -> None:
        pass

    return jobs


def _bodies(backend: MemoryBackend) -> list[str]:
    return [message.body for message in backend.messages()]


def test_enqueue_returns_the_job_id_written_in_the_envelope(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    jobs = _app(backend, clock)

    job_id = jobs.enqueue("send-email", Email(to="ada@example.com"))

    [body] = _bodies(backend)
    envelope = decode(body)
    assert envelope.id == job_id
    assert envelope.type == "send-email"
    assert envelope.payload == {"to": "ada@example.com", "subject": ""}
    assert envelope.enqueued_at == clock.now()


def test_each_enqueue_gets_a_new_job_id_and_correlation_id(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    jobs = _app(backend, clock)

    first = jobs.enqueue("send-email", {"to": "a@example.com"})
    second = jobs.enqueue("send-email", {"to": "a@example.com"})

    envelopes = [decode(body) for body in _bodies(backend)]
    assert first != second
    assert envelopes[0].correlation_id != envelopes[1].correlation_id


def test_the_message_attributes_mirror_the_envelope(backend: MemoryBackend, clock: ManualClock) -> None:
    jobs = _app(backend, clock)

    job_id = jobs.enqueue("send-email", {"to": "a@example.com"}, idempotency_key="welcome-a")

    [message] = backend.messages()
    envelope = decode(message.body)
    assert envelope.idempotency_key == "welcome-a"
    # Trace context and baggage come on top when an OpenTelemetry SDK is installed.
    mirrored = {name: value for name, value in message.attributes.items() if name.startswith("cloudjobs.")}
    assert mirrored == {
        "cloudjobs.type": "send-email",
        "cloudjobs.id": job_id,
        "cloudjobs.correlation_id": envelope.correlation_id,
    }


def test_enqueue_many_returns_ids_in_request_order(backend: MemoryBackend, clock: ManualClock) -> None:
    jobs = _app(backend, clock)

    ids = jobs.enqueue_many([("send-email", {"to": f"{index}@example.com"}) for index in range(3)])

    envelopes = [decode(body) for body in _bodies(backend)]
    assert ids == [envelope.id for envelope in envelopes]
    assert [envelope.payload for envelope in envelopes] == [
        {"to": f"{index}@example.com", "subject": ""} for index in range(3)
    ]


def test_enqueue_many_of_nothing_sends_nothing(backend: MemoryBackend, clock: ManualClock) -> None:
    recording = RecordingBackend(backend)

    assert _app(recording, clock).enqueue_many([]) == []
    assert recording.batches == []


def test_the_job_handle_enqueues_under_its_name(backend: MemoryBackend, clock: ManualClock) -> None:
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=clock)

    @jobs.job("resize")
    def resize(payload: dict[str, int]) -> None:
        pass

    job_id = resize.enqueue({"width": 10})
    ids = resize.enqueue_many([{"width": 1}, {"width": 2}])

    assert [decode(body).id for body in _bodies(backend)] == [job_id, *ids]
    assert {decode(body).type for body in _bodies(backend)} == {"resize"}


@pytest.mark.parametrize("payload", [{"to": 5}, {}, {"subject": "hi"}, "ada@example.com"])
def test_a_payload_that_fails_the_handlers_model_is_refused_at_enqueue(
    backend: MemoryBackend, clock: ManualClock, payload: object
) -> None:
    jobs = _app(backend, clock)

    with pytest.raises(PayloadValidationError) as caught:
        jobs.enqueue("send-email", payload)

    assert caught.value.job_name == "send-email"
    assert caught.value.reason == "invalid_payload"
    assert len(backend) == 0


def test_one_invalid_payload_stops_enqueue_many_before_anything_is_sent(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    jobs = _app(backend, clock)

    with pytest.raises(PayloadValidationError):
        jobs.enqueue_many([("send-email", {"to": "a@example.com"}), ("send-email", {"to": None})])

    assert len(backend) == 0


def test_a_payload_that_is_not_json_is_refused_for_an_unregistered_job_type(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    jobs = _app(backend, clock)

    with pytest.raises(PayloadValidationError) as caught:
        jobs.enqueue("registered-elsewhere", {"when": object()})

    assert caught.value.job_name == "registered-elsewhere"
    assert len(backend) == 0


def test_an_unregistered_job_type_may_be_enqueued_with_a_json_payload(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    _app(backend, clock).enqueue("registered-elsewhere", {"n": [1, 2]})

    assert decode(_bodies(backend)[0]).payload == {"n": [1, 2]}


def test_an_oversized_payload_is_refused_before_anything_is_sent(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    recording = RecordingBackend(backend)
    jobs = _app(recording, clock)
    huge = {"to": "a@example.com", "subject": "x" * (1024 * 1024)}

    with pytest.raises(PayloadTooLargeError) as caught:
        jobs.enqueue_many([("send-email", {"to": "small@example.com"}), ("send-email", huge)])

    assert caught.value.job_name == "send-email"
    assert caught.value.size > caught.value.limit == 1024 * 1024
    assert recording.batches == []
    assert len(backend) == 0


def test_the_size_limit_is_the_queues_and_counts_utf8_bytes(clock: ManualClock) -> None:
    backend = MemoryBackend(max_message_size=2048, clock=clock)
    jobs = _app(backend, clock)

    jobs.enqueue("send-email", {"to": "a@example.com", "subject": "x" * 1000})
    with pytest.raises(PayloadTooLargeError) as caught:
        jobs.enqueue("send-email", {"to": "a@example.com", "subject": "é" * 1000})

    assert caught.value.limit == 2048
    assert len(backend) == 1


def test_enqueue_many_sends_batches_of_at_most_ten(backend: MemoryBackend, clock: ManualClock) -> None:
    recording = RecordingBackend(backend)

    ids = _app(recording, clock).enqueue_many(
        [("send-email", {"to": f"{index}@example.com"}) for index in range(25)]
    )

    assert recording.batch_sizes == [10, 10, 5]
    assert len(ids) == 25
    assert len(backend) == 25


def test_enqueue_many_keeps_each_batch_within_one_mebibyte(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    recording = RecordingBackend(backend)
    payload = {"to": "a@example.com", "subject": "x" * 300_000}

    _app(recording, clock).enqueue_many([("send-email", payload)] * 7)

    assert recording.batch_sizes == [3, 3, 1]
    for batch in recording.batches:
        assert sum(len(message.body.encode()) for message in batch) <= 1024 * 1024
    assert len(backend) == 7


def test_a_refused_entry_is_reported_and_the_others_are_sent(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    recording = RecordingBackend(backend, refuse={3: False})

    with pytest.raises(BatchEnqueueError) as caught:
        _app(recording, clock).enqueue_many(
            [("send-email", {"to": f"{index}@example.com"}) for index in range(5)]
        )

    error = caught.value
    assert list(error.failures) == [3]
    assert "refused entry 3" in error.failures[3]
    assert error.sent[3] is None
    sent = [job_id for job_id in error.sent if job_id is not None]
    assert len(sent) == 4
    assert [decode(body).id for body in _bodies(backend)] == sent
    assert recording.batch_sizes == [5], "a non-retryable refusal is not resent"


def test_a_retryable_refusal_is_resent_and_succeeds(backend: MemoryBackend, clock: ManualClock) -> None:
    recording = RecordingBackend(backend, refuse={3: True})

    ids = _app(recording, clock).enqueue_many(
        [("send-email", {"to": f"{index}@example.com"}) for index in range(5)]
    )

    assert recording.batch_sizes == [5, 1]
    assert recording.batches[1][0] is recording.batches[0][3]
    assert len(ids) == 5
    assert sorted(decode(body).id for body in _bodies(backend)) == sorted(ids)


def test_a_retryable_refusal_that_persists_is_reported_after_three_sends(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    recording = RecordingBackend(backend, refuse={1: True, 2: True, 3: True})

    with pytest.raises(BatchEnqueueError) as caught:
        _app(recording, clock).enqueue_many([("send-email", {"to": "a@example.com"})] * 2)

    assert recording.batch_sizes == [2, 1, 1]
    assert list(caught.value.failures) == [1]
    assert caught.value.sent[0] is not None


@pytest.mark.parametrize("delay", [-1, timedelta(seconds=-1), timedelta(days=366, seconds=1)])
def test_a_delay_outside_zero_to_a_year_and_a_day_is_refused(
    backend: MemoryBackend, clock: ManualClock, delay: float | timedelta
) -> None:
    with pytest.raises(InvalidDelayError) as caught:
        _app(backend, clock).enqueue("send-email", {"to": "a@example.com"}, delay=delay)

    assert caught.value.queue == "jobs"
    assert len(backend) == 0


def test_any_delay_on_a_fifo_queue_is_refused(clock: ManualClock) -> None:
    backend = MemoryBackend("jobs.fifo", clock=clock)

    with pytest.raises(InvalidDelayError) as caught:
        _app(backend, clock).enqueue("send-email", {"to": "a@example.com"}, delay=1)

    assert caught.value.queue == "jobs.fifo"
    assert caught.value.delay == timedelta(seconds=1)
    assert len(backend) == 0


@pytest.mark.parametrize("delay", [5, 5.0, timedelta(seconds=5)])
def test_a_delay_takes_seconds_or_a_timedelta(
    backend: MemoryBackend, clock: ManualClock, delay: float | timedelta
) -> None:
    _app(backend, clock).enqueue("send-email", {"to": "a@example.com"}, delay=delay)

    assert backend.receive(max_messages=1, wait=timedelta(0)) == []
    backend.advance(5)
    assert len(backend.receive(max_messages=1, wait=timedelta(0))) == 1


def test_a_delay_of_another_type_is_a_type_error(backend: MemoryBackend, clock: ManualClock) -> None:
    with pytest.raises(TypeError, match="delay"):
        _app(backend, clock).enqueue("send-email", {"to": "a@example.com"}, delay="5")  # type: ignore[arg-type]


def test_enqueue_many_applies_one_delay_to_every_job(backend: MemoryBackend, clock: ManualClock) -> None:
    _app(backend, clock).enqueue_many(
        [("send-email", {"to": "a@example.com"})] * 2, delay=timedelta(seconds=3)
    )

    assert [message.visible_at - clock.now() for message in backend.messages()] == [timedelta(seconds=3)] * 2


def test_a_fifo_message_is_grouped_by_job_type_and_deduplicated_by_job_id(clock: ManualClock) -> None:
    backend = MemoryBackend("jobs.fifo", clock=clock)

    job_id = _app(backend, clock).enqueue("send-email", {"to": "a@example.com"})

    [message] = backend.messages()
    assert message.group_id == "send-email"
    assert decode(message.body).id == job_id


def test_a_fifo_group_comes_from_the_request_then_the_settings(clock: ManualClock) -> None:
    backend = MemoryBackend("jobs.fifo", clock=clock)
    jobs = _app(backend, clock, message_group_id="tenant-default")

    jobs.enqueue("send-email", {"to": "a@example.com"})
    jobs.enqueue("send-email", {"to": "a@example.com"}, group_id="tenant-7")

    assert [message.group_id for message in backend.messages()] == ["tenant-default", "tenant-7"]


def test_a_fifo_deduplication_id_given_twice_enqueues_once(clock: ManualClock) -> None:
    backend = MemoryBackend("jobs.fifo", clock=clock)
    jobs = _app(backend, clock)

    jobs.enqueue("send-email", {"to": "a@example.com"}, deduplication_id="order-1")
    jobs.enqueue("send-email", {"to": "a@example.com"}, deduplication_id="order-1")

    assert len(backend) == 1


def test_equal_fifo_payloads_stay_two_jobs(clock: ManualClock) -> None:
    backend = MemoryBackend("jobs.fifo", clock=clock)
    jobs = _app(backend, clock)

    jobs.enqueue("send-email", {"to": "a@example.com"})
    jobs.enqueue("send-email", {"to": "a@example.com"})

    assert len(backend) == 2


def test_a_job_enqueued_inside_a_handler_inherits_its_correlation_id(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=clock, random=lambda: 0.5)
    seen: dict[str, str] = {}

    @jobs.job("parent")
    def parent(payload: dict[str, str], job: Job) -> None:
        seen["parent"] = job.correlation_id
        jobs.enqueue("child", {})

    @jobs.job("child")
    def child(payload: dict[str, str], job: Job) -> None:
        seen["child"] = job.correlation_id

    jobs.enqueue("parent", {})
    report = jobs.drain()

    assert report.completed == 2
    assert seen["child"] == seen["parent"]


def test_a_job_enqueued_after_a_handler_returned_gets_a_fresh_correlation_id(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=clock)
    seen: list[str] = []

    @jobs.job("record")
    def record(payload: dict[str, str], job: Job) -> None:
        seen.append(job.correlation_id)

    jobs.enqueue("record", {})
    jobs.drain()
    jobs.enqueue("record", {})
    jobs.drain()

    assert len(set(seen)) == 2


def test_enqueue_many_works_on_a_queue_with_a_small_message_size_limit(clock: ManualClock) -> None:
    backend = MemoryBackend(max_message_size=2000, clock=clock)

    _app(backend, clock).enqueue_many([("send-email", {"to": "a@example.com", "subject": "x" * 1000})] * 2)

    assert len(backend) == 2


def test_the_envelope_body_is_json(backend: MemoryBackend, clock: ManualClock) -> None:
    _app(backend, clock).enqueue("send-email", {"to": "a@example.com"})

    assert json.loads(_bodies(backend)[0])["cloudjobs"] == 1

"""MemoryBackend: SQS's semantics in memory (delay, visibility, receive count, redrive, FIFO, limits)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from cloudjobs import BackendError, ConfigurationError, Delivery, ManualClock, MemoryBackend
from cloudjobs.backends.base import OutgoingMessage, message_size

NO_WAIT = timedelta(0)


def _receive(backend: MemoryBackend, max_messages: int = 10, **options: timedelta) -> list[Delivery]:
    return backend.receive(max_messages=max_messages, wait=NO_WAIT, **options)


def _send(backend: MemoryBackend, body: str = "hello", **options: object) -> str:
    result = backend.send([OutgoingMessage(body=body, **options)])[0]  # type: ignore[arg-type]
    assert result.message_id is not None, result.error
    return result.message_id


def _fifo(body: str, group: str, deduplication_id: str | None = None) -> OutgoingMessage:
    return OutgoingMessage(body=body, group_id=group, deduplication_id=deduplication_id or body)


def test_a_sent_message_is_received_with_its_body_attributes_and_first_receive_count(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    message_id = _send(backend, "hello", attributes={"cloudjobs.type": "greet"})

    [delivery] = _receive(backend)

    assert delivery.message_id == message_id
    assert delivery.body == "hello"
    assert delivery.attributes == {"cloudjobs.type": "greet"}
    assert delivery.receive_count == 1
    assert delivery.sent_at == clock.now()
    assert delivery.queue == "jobs"


def test_a_received_message_is_hidden_from_other_receivers(backend: MemoryBackend) -> None:
    _send(backend)
    _receive(backend)

    assert _receive(backend) == []


def test_a_delayed_message_stays_hidden_until_its_delay_has_passed(backend: MemoryBackend) -> None:
    _send(backend, delay=timedelta(seconds=10))

    backend.advance(9)
    assert _receive(backend) == []
    assert backend.counts() == (0, 0, 1)

    backend.advance(1)
    assert len(_receive(backend)) == 1


def test_the_injected_clock_moves_the_queue_time_too(backend: MemoryBackend, clock: ManualClock) -> None:
    _send(backend, delay=timedelta(seconds=5))

    clock.advance(5)

    assert len(_receive(backend)) == 1


def test_a_message_not_deleted_in_time_is_redelivered_with_a_higher_receive_count(
    backend: MemoryBackend,
) -> None:
    _send(backend)
    [first] = _receive(backend, visibility=timedelta(seconds=30))

    backend.advance(29)
    assert _receive(backend) == []
    backend.advance(1)
    [second] = _receive(backend)

    assert second.message_id == first.message_id
    assert second.receive_count == 2
    assert second.receipt != first.receipt


def test_the_queue_visibility_timeout_applies_when_receive_sets_none(clock: ManualClock) -> None:
    backend = MemoryBackend(visibility_timeout=timedelta(seconds=5), clock=clock)
    _send(backend)
    _receive(backend)

    backend.advance(5)

    assert len(_receive(backend)) == 1


def test_a_deleted_message_is_never_redelivered(backend: MemoryBackend) -> None:
    _send(backend)
    [delivery] = _receive(backend)

    assert backend.delete([delivery.receipt]) == []
    backend.advance(timedelta(hours=1))

    assert _receive(backend) == []
    assert len(backend) == 0


def test_a_stale_receipt_does_not_delete_the_redelivered_message(backend: MemoryBackend) -> None:
    _send(backend)
    [first] = _receive(backend, visibility=timedelta(seconds=1))
    backend.advance(1)
    _receive(backend)

    backend.delete([first.receipt])

    assert len(backend) == 1


def test_after_max_receive_count_receives_the_next_receive_moves_the_message_to_the_dlq(
    clock: ManualClock,
) -> None:
    backend = MemoryBackend(max_receive_count=2, clock=clock)
    _send(backend, "poison", attributes={"cloudjobs.type": "t"})
    for _ in range(2):
        assert len(_receive(backend, visibility=timedelta(seconds=1))) == 1
        backend.advance(1)

    assert _receive(backend) == []

    assert len(backend) == 0
    assert backend.dead_letter_queue is not None
    [moved] = _receive(backend.dead_letter_queue)
    assert moved.body == "poison"
    assert moved.attributes == {"cloudjobs.type": "t"}
    assert moved.queue == "jobs-dlq"


def test_a_queue_without_max_receive_count_has_no_dlq(clock: ManualClock) -> None:
    backend = MemoryBackend(max_receive_count=None, clock=clock)
    _send(backend)
    [delivery] = _receive(backend)

    assert backend.info().dead_letter_queue is None
    with pytest.raises(ConfigurationError):
        backend.dead_letter(delivery, {"cloudjobs.dead_letter": "{}"})


def test_dead_letter_copies_the_message_with_the_extra_attributes(backend: MemoryBackend) -> None:
    _send(backend, "body", attributes={"cloudjobs.type": "t"})
    [delivery] = _receive(backend)

    backend.dead_letter(delivery, {"cloudjobs.dead_letter": '{"reason":"x"}'})

    assert backend.dead_letter_queue is not None
    [copy] = _receive(backend.dead_letter_queue)
    assert copy.body == "body"
    assert copy.attributes == {"cloudjobs.type": "t", "cloudjobs.dead_letter": '{"reason":"x"}'}
    assert len(backend) == 1, "dead_letter copies; the caller deletes"


def test_more_than_ten_attributes_are_refused_for_that_entry_only(backend: MemoryBackend) -> None:
    too_many = {f"a{index}": "v" for index in range(11)}
    ten = {f"a{index}": "v" for index in range(10)}

    results = backend.send([OutgoingMessage("x", attributes=too_many), OutgoingMessage("y", attributes=ten)])

    assert not results[0].is_sent
    assert results[0].retryable is False
    assert "attributes" in (results[0].error or "")
    assert results[1].is_sent
    assert [delivery.body for delivery in _receive(backend)] == ["y"]


def test_an_empty_attribute_value_is_refused_for_that_entry_only(backend: MemoryBackend) -> None:
    results = backend.send(
        [OutgoingMessage("x", attributes={"tracestate": ""}), OutgoingMessage("y", attributes={"k": "v"})]
    )

    assert not results[0].is_sent
    assert "empty" in (results[0].error or "")
    assert results[1].is_sent


def _is_refused(backend: MemoryBackend, message: OutgoingMessage) -> bool:
    # Refused either per entry or, for a request over the limit, as a whole: both keep it off the queue.
    try:
        [result] = backend.send([message])
    except BackendError:
        return True
    return not result.is_sent


def test_the_size_limit_counts_utf8_bytes_not_characters(clock: ManualClock) -> None:
    backend = MemoryBackend(max_message_size=100, clock=clock)
    fits = "é" * 50  # 50 characters, 100 bytes
    too_big = "é" * 51  # 51 characters, 102 bytes

    assert message_size(fits, {}) == 100
    assert not _is_refused(backend, OutgoingMessage(fits))
    assert _is_refused(backend, OutgoingMessage(too_big))
    assert [delivery.body for delivery in _receive(backend)] == [fits]


def test_attributes_count_towards_the_size_limit(clock: ManualClock) -> None:
    backend = MemoryBackend(max_message_size=100, clock=clock)

    assert _is_refused(backend, OutgoingMessage("x" * 90, attributes={"name": "value"}))
    assert len(backend) == 0


def test_an_oversized_entry_fails_alone_and_the_rest_of_its_batch_is_sent(clock: ManualClock) -> None:
    backend = MemoryBackend(max_message_size=1000, clock=clock)

    results = backend.send([OutgoingMessage("x" * 1200), OutgoingMessage("small")])

    assert [result.is_sent for result in results] == [False, True]
    assert results[0].retryable is False


def test_a_batch_of_messages_that_each_fit_is_sent_even_when_their_sum_exceeds_the_message_limit(
    clock: ManualClock,
) -> None:
    backend = MemoryBackend(max_message_size=1000, clock=clock)

    results = backend.send([OutgoingMessage("a" * 600), OutgoingMessage("b" * 600)])

    assert all(result.is_sent for result in results)


@pytest.mark.parametrize("count", [0, 11])
def test_a_batch_of_other_than_one_to_ten_entries_is_refused(backend: MemoryBackend, count: int) -> None:
    with pytest.raises(BackendError):
        backend.send([OutgoingMessage(str(index)) for index in range(count)])


@pytest.mark.parametrize("delay", [timedelta(seconds=-1), timedelta(seconds=901)])
def test_a_delay_outside_zero_to_nine_hundred_seconds_is_refused(
    backend: MemoryBackend, delay: timedelta
) -> None:
    [result] = backend.send([OutgoingMessage("x", delay=delay)])

    assert not result.is_sent


def test_a_fifo_group_with_a_message_in_flight_is_blocked_while_other_groups_flow(
    clock: ManualClock,
) -> None:
    backend = MemoryBackend("orders.fifo", clock=clock)
    backend.send([_fifo("a1", "a"), _fifo("a2", "a"), _fifo("b1", "b")])

    [a1] = _receive(backend, max_messages=1)
    assert a1.body == "a1"
    assert [delivery.body for delivery in _receive(backend)] == ["b1"]
    assert _receive(backend) == []

    backend.delete([a1.receipt])

    assert [delivery.body for delivery in _receive(backend)] == ["a2"]


def test_an_idle_fifo_group_yields_several_messages_in_order_in_one_receive(clock: ManualClock) -> None:
    backend = MemoryBackend("orders.fifo", clock=clock)
    backend.send([_fifo("a1", "a"), _fifo("b1", "b"), _fifo("a2", "a")])

    assert [delivery.body for delivery in _receive(backend)] == ["a1", "b1", "a2"]


def test_a_fifo_group_is_unblocked_when_its_message_becomes_visible_again(clock: ManualClock) -> None:
    backend = MemoryBackend("orders.fifo", clock=clock)
    backend.send([_fifo("a1", "a"), _fifo("a2", "a")])
    _receive(backend, visibility=timedelta(seconds=10))

    assert _receive(backend) == []

    backend.advance(10)

    assert [delivery.body for delivery in _receive(backend)] == ["a1", "a2"]


def test_a_fifo_duplicate_within_five_minutes_is_accepted_but_not_delivered(clock: ManualClock) -> None:
    backend = MemoryBackend("orders.fifo", clock=clock)
    backend.send([_fifo("first", "g", deduplication_id="same")])
    backend.advance(timedelta(minutes=4, seconds=59))

    [duplicate] = backend.send([_fifo("second", "g", deduplication_id="same")])

    assert duplicate.is_sent
    assert len(backend) == 1


def test_a_fifo_deduplication_id_may_be_reused_after_five_minutes(clock: ManualClock) -> None:
    backend = MemoryBackend("orders.fifo", clock=clock)
    backend.send([_fifo("first", "g", deduplication_id="same")])
    backend.advance(timedelta(minutes=5))

    backend.send([_fifo("second", "g", deduplication_id="same")])

    assert len(backend) == 2


@pytest.mark.parametrize(
    "message",
    [
        OutgoingMessage("x", group_id="g", deduplication_id="d", delay=timedelta(seconds=1)),
        OutgoingMessage("x", deduplication_id="d"),
        OutgoingMessage("x", group_id="g"),
    ],
    ids=["per-message delay", "no group id", "no deduplication id"],
)
def test_a_fifo_queue_refuses_what_sqs_refuses(clock: ManualClock, message: OutgoingMessage) -> None:
    backend = MemoryBackend("orders.fifo", clock=clock)

    [result] = backend.send([message])

    assert not result.is_sent
    assert len(backend) == 0


def test_a_fifo_queue_gets_a_fifo_dead_letter_queue(clock: ManualClock) -> None:
    backend = MemoryBackend("orders.fifo", clock=clock)

    assert backend.info().is_fifo
    assert backend.dead_letter_queue is not None
    assert backend.dead_letter_queue.name == "orders-dlq.fifo"
    assert backend.dead_letter_queue.is_fifo


def test_info_names_the_dead_letter_queue_while_it_is_empty(backend: MemoryBackend) -> None:
    assert backend.info().dead_letter_queue == "jobs-dlq"


def test_info_names_the_dead_letter_queue_once_it_holds_a_message(backend: MemoryBackend) -> None:
    _send(backend)
    [delivery] = _receive(backend)
    backend.dead_letter(delivery, {"cloudjobs.dead_letter": "{}"})

    assert backend.info().dead_letter_queue == "jobs-dlq"
    assert backend.info().max_receive_count == 5


def test_changing_visibility_hides_an_in_flight_message_for_the_new_timeout(backend: MemoryBackend) -> None:
    _send(backend)
    [delivery] = _receive(backend, visibility=timedelta(seconds=5))

    assert backend.change_visibility([(delivery.receipt, timedelta(seconds=60))]) == []
    backend.advance(59)
    assert _receive(backend) == []
    backend.advance(1)

    assert len(_receive(backend)) == 1


def test_changing_visibility_to_zero_makes_the_message_visible_at_once(backend: MemoryBackend) -> None:
    _send(backend)
    [delivery] = _receive(backend)

    backend.change_visibility([(delivery.receipt, timedelta(0))])

    assert len(_receive(backend)) == 1


def test_changing_visibility_with_a_stale_receipt_reports_it_gone(backend: MemoryBackend) -> None:
    _send(backend)
    [first] = _receive(backend, visibility=timedelta(seconds=1))
    backend.advance(1)
    [second] = _receive(backend, visibility=timedelta(seconds=30))

    gone = backend.change_visibility([(first.receipt, timedelta(seconds=60)), (second.receipt, NO_WAIT)])

    assert gone == [first.receipt]


def test_changing_visibility_of_an_expired_message_reports_it_gone(backend: MemoryBackend) -> None:
    _send(backend)
    [delivery] = _receive(backend, visibility=timedelta(seconds=1))
    backend.advance(1)

    assert backend.change_visibility([(delivery.receipt, timedelta(seconds=30))]) == [delivery.receipt]


def test_visibility_is_capped_at_twelve_hours_from_the_receive(backend: MemoryBackend) -> None:
    _send(backend)
    [delivery] = _receive(backend, visibility=timedelta(hours=1))
    backend.advance(timedelta(hours=11))

    backend.change_visibility([(delivery.receipt, timedelta(hours=12))])
    backend.advance(timedelta(hours=1))

    assert len(_receive(backend)) == 1


def test_a_long_poll_wakes_when_another_thread_sends(backend: MemoryBackend) -> None:
    polling = threading.Event()
    received = threading.Event()
    deliveries: list[Delivery] = []

    def poll() -> None:
        polling.set()
        deliveries.extend(backend.receive(max_messages=1, wait=timedelta(seconds=20)))
        received.set()

    receiver = threading.Thread(target=poll, daemon=True)
    started = time.monotonic()
    receiver.start()
    assert polling.wait(timeout=5)
    _send(backend, "wake up")

    assert received.wait(timeout=5), "the long poll did not return after a send"
    receiver.join(timeout=5)
    assert [delivery.body for delivery in deliveries] == ["wake up"]
    assert time.monotonic() - started < 10


def test_a_long_poll_with_nothing_to_receive_returns_empty_after_its_wait(backend: MemoryBackend) -> None:
    started = time.monotonic()

    assert backend.receive(max_messages=1, wait=timedelta(milliseconds=20)) == []
    assert time.monotonic() - started >= 0.02


@pytest.mark.parametrize("count", [0, 11])
def test_receiving_other_than_one_to_ten_messages_is_refused(backend: MemoryBackend, count: int) -> None:
    with pytest.raises(BackendError):
        backend.receive(max_messages=count, wait=NO_WAIT)


def test_messages_are_received_in_send_order(backend: MemoryBackend) -> None:
    backend.send([OutgoingMessage(str(index)) for index in range(5)])

    assert [delivery.body for delivery in _receive(backend, max_messages=3)] == ["0", "1", "2"]
    assert [delivery.body for delivery in _receive(backend)] == ["3", "4"]

"""How a worker on several queues shares its handlers: the policies (deterministic, no threads) and
the dispatcher's caps, room and shutdown."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from datetime import UTC, datetime

import pytest

from cloudjobs.backends.base import Delivery
from cloudjobs.runtimes.dispatch import (
    STRICT_GUARD_EVERY,
    Dispatcher,
    QueuePolicy,
    Slot,
    StrictOrderPolicy,
    WeightedPolicy,
)

_ALL_READY = {"critical": 0, "default": 1, "bulk": 2}


def _picks(policy: QueuePolicy, ready: dict[str, int], count: int) -> list[str]:
    return [policy.pick(ready) for _ in range(count)]


def _chain(message_id: str) -> list[Delivery]:
    return [
        Delivery(
            message_id=message_id,
            receipt=f"receipt-{message_id}",
            body="{}",
            attributes={},
            receive_count=1,
            sent_at=datetime(2026, 1, 1, tzinfo=UTC),
            queue="jobs",
        )
    ]


# -- weighted ---------------------------------------------------------------------------------------


def test_weighted_polling_gives_each_busy_queue_its_weights_share_of_the_starts() -> None:
    picks = _picks(WeightedPolicy({"critical": 6, "default": 3, "bulk": 1}), _ALL_READY, 1000)

    assert Counter(picks) == {"critical": 600, "default": 300, "bulk": 100}
    # Smoothly, not in runs: every ten starts hold each queue's exact share.
    for start in range(0, 1000, 10):
        assert Counter(picks[start : start + 10]) == {"critical": 6, "default": 3, "bulk": 1}


def test_weighted_polling_gives_an_idle_queues_share_to_the_others() -> None:
    picks = _picks(WeightedPolicy({"critical": 6, "default": 3, "bulk": 1}), {"default": 4, "bulk": 5}, 400)

    assert Counter(picks) == {"default": 300, "bulk": 100}


def test_a_queue_that_was_idle_banks_no_credit_for_a_burst_later() -> None:
    policy = WeightedPolicy({"critical": 1, "bulk": 1})
    _picks(policy, {"critical": 0}, 100)

    picks = _picks(policy, {"critical": 100, "bulk": 50}, 10)

    assert Counter(picks) == {"critical": 5, "bulk": 5}
    assert all(first != second for first, second in itertools.pairwise(picks))


# -- strict order -----------------------------------------------------------------------------------


def test_strict_order_picks_the_first_queue_with_work_waiting() -> None:
    policy = StrictOrderPolicy(["critical", "default", "bulk"])

    assert policy.pick({"default": 7, "bulk": 3}) == "default"
    assert policy.pick({"bulk": 3}) == "bulk"
    assert policy.pick({"critical": 9, "bulk": 3}) == "critical"


def test_strict_orders_guard_gives_waiting_lower_queues_one_start_in_ten() -> None:
    assert STRICT_GUARD_EVERY == 10
    picks = _picks(StrictOrderPolicy(["critical", "default", "bulk"]), _ALL_READY, 1000)

    lower = [index for index, name in enumerate(picks) if name != "critical"]
    assert len(lower) == 100
    # The bound: in any ten consecutive starts, exactly one goes to a lower queue.
    for start in range(len(picks) - 9):
        assert sum(1 for name in picks[start : start + 10] if name != "critical") == 1


def test_the_guards_turn_goes_to_the_lower_queue_waiting_longest() -> None:
    policy = StrictOrderPolicy(["critical", "default", "bulk"])
    # Arrival numbers: bulk's oldest chain arrived before default's.
    ready = {"critical": 30, "default": 20, "bulk": 10}

    picks = _picks(policy, ready, 10)

    assert picks == ["critical"] * 9 + ["bulk"]


def test_the_guard_counts_only_starts_that_passed_over_a_waiting_lower_queue() -> None:
    policy = StrictOrderPolicy(["critical", "default"])
    _picks(policy, {"critical": 0, "default": 1}, 8)
    # Nothing below waits: the count starts over.
    _picks(policy, {"critical": 0}, 5)

    picks = _picks(policy, {"critical": 0, "default": 1}, 10)

    assert picks == ["critical"] * 9 + ["default"]


# -- the dispatcher ---------------------------------------------------------------------------------


def _receive(dispatcher: Dispatcher[str], slot: Slot[str], chains: list[list[Delivery]], count: int) -> bool:
    """Put a received batch as a receiver does: room taken first."""
    assert dispatcher.wait_for_room(slot, 0)
    return dispatcher.put(slot, chains, count)


def test_a_queue_at_its_cap_is_skipped_until_one_of_its_chains_ends() -> None:
    dispatcher: Dispatcher[str] = Dispatcher(WeightedPolicy({"bulk": 5, "critical": 1}))
    bulk = dispatcher.add_queue("bulk", "bulk lane", cap=1, limit=11, batch=10)
    critical = dispatcher.add_queue("critical", "critical lane", cap=4, limit=14, batch=10)
    _receive(dispatcher, bulk, [_chain("b1"), _chain("b2")], 2)
    _receive(dispatcher, critical, [_chain("c1")], 1)

    first, second = dispatcher.take(), dispatcher.take()
    assert first is not None
    assert second is not None
    assert (first[0].lane, first[1][0].message_id) == ("bulk lane", "b1")
    # Bulk outweighs critical 5 to 1 but holds its one slot: critical's chain goes next.
    assert (second[0].lane, second[1][0].message_id) == ("critical lane", "c1")

    dispatcher.settled(bulk, 1, ends_chain=True)
    third = dispatcher.take()
    assert third is not None
    assert third[1][0].message_id == "b2"


def test_a_handler_waiting_on_a_capped_queue_starts_its_chain_when_the_cap_frees() -> None:
    dispatcher: Dispatcher[str] = Dispatcher(StrictOrderPolicy(["bulk"]))
    bulk = dispatcher.add_queue("bulk", "bulk lane", cap=1, limit=11, batch=10)
    _receive(dispatcher, bulk, [_chain("b1"), _chain("b2")], 2)
    assert dispatcher.take() is not None
    taken: list[str] = []

    def take_one() -> None:
        result = dispatcher.take()
        if result is not None:
            taken.extend(delivery.message_id for delivery in result[1])

    waiting = threading.Thread(target=take_one)
    waiting.start()
    # An absence takes time to show: the handler must still be waiting for the cap.
    waiting.join(0.2)
    assert waiting.is_alive()
    assert taken == []

    dispatcher.settled(bulk, 1, ends_chain=True)

    waiting.join(10)
    assert taken == ["b2"]


def test_a_queue_has_room_to_receive_only_while_a_full_batch_fits() -> None:
    dispatcher: Dispatcher[str] = Dispatcher(StrictOrderPolicy(["default"]))
    slot = dispatcher.add_queue("default", "lane", cap=4, limit=14, batch=10)
    assert dispatcher.wait_for_room(slot, 0)

    dispatcher.put(slot, [_chain(str(index)) for index in range(10)], 10)
    assert not dispatcher.wait_for_room(slot, 0)

    dispatcher.settled(slot, 6)
    assert dispatcher.wait_for_room(slot, 0)


def test_room_taken_by_a_receive_under_way_is_not_given_to_a_second_receive() -> None:
    dispatcher: Dispatcher[str] = Dispatcher(StrictOrderPolicy(["default"]))
    slot = dispatcher.add_queue("default", "lane", cap=8, limit=20, batch=10)
    assert dispatcher.wait_for_room(slot, 0)  # the first receiver's poll
    assert dispatcher.wait_for_room(slot, 0)  # the second's: 10 + 10 fit in 20
    assert not dispatcher.wait_for_room(slot, 0)  # never a third

    dispatcher.put(slot, [_chain(str(index)) for index in range(10)], 10)  # the first's ten arrive
    dispatcher.give_back_room(slot)  # the second came back empty
    assert dispatcher.wait_for_room(slot, 0)  # 10 held + 10: room for one poll
    assert not dispatcher.wait_for_room(slot, 0)  # but not for two


def test_a_closed_dispatcher_starts_nothing_more_and_hands_back_what_never_started() -> None:
    dispatcher: Dispatcher[str] = Dispatcher(WeightedPolicy({"default": 1, "bulk": 1}))
    default = dispatcher.add_queue("default", "default lane", cap=4, limit=14, batch=10)
    bulk = dispatcher.add_queue("bulk", "bulk lane", cap=4, limit=14, batch=10)
    _receive(dispatcher, default, [_chain("d1")], 1)
    _receive(dispatcher, bulk, [_chain("b1"), _chain("b2")], 2)
    assert dispatcher.wait_for_room(default, 0)  # a receive under way when the worker stops

    dispatcher.close()

    assert dispatcher.take() is None
    assert dispatcher.take() is None  # every handler is told, not just the first
    assert not dispatcher.put(default, [_chain("d2")], 1)
    assert not dispatcher.wait_for_room(default, 0)
    unstarted = {slot.name: [d.message_id for d in chain] for slot, chain in dispatcher.unstarted()}
    assert unstarted == {"default": ["d1"], "bulk": ["b1", "b2"]}


def test_a_guard_share_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        StrictOrderPolicy(["critical"], guard_every=1)

"""FIFO ordering: messages of one group run one after another, and a failure stops the group."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from cloudjobs.backends.base import Delivery
from cloudjobs.consumer import Consumer
from cloudjobs.outcomes import Cancelled, Completed, DeadLetter, Outcome, Released

_GROUP_BLOCKED = "fifo_group_blocked"


def chains(deliveries: Sequence[Delivery]) -> list[list[Delivery]]:
    """Split a received batch into chains that may run concurrently.

    A message without a group is a chain of its own; the messages of one FIFO group form one
    chain, in the order received.
    """
    result: list[list[Delivery]] = []
    groups: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        if delivery.group_id is None:
            result.append([delivery])
        elif delivery.group_id in groups:
            groups[delivery.group_id].append(delivery)
        else:
            groups[delivery.group_id] = chain = [delivery]
            result.append(chain)
    return result


def lets_group_continue(outcome: Outcome) -> bool:
    """Whether the next message of the group may run after this outcome.

    A job that completed, was cancelled or went to the DLQ is out of the way; a retried,
    deferred or released one must run again before the messages behind it.
    """
    return isinstance(outcome, Completed | Cancelled | DeadLetter)


def run_chain(
    chain: Sequence[Delivery], process: Callable[[Delivery], Outcome]
) -> Iterator[tuple[Delivery, Outcome]]:
    """Run a chain in order; once one message cannot go on, release the rest unrun."""
    blocked = False
    for delivery in chain:
        if blocked:
            yield delivery, Released(reason=_GROUP_BLOCKED)
            continue
        outcome = process(delivery)
        blocked = not lets_group_continue(outcome)
        yield delivery, outcome


def run_in_order(consumer: Consumer, deliveries: Sequence[Delivery]) -> Iterator[tuple[Delivery, Outcome]]:
    """Run a batch in this thread, chain by chain."""
    for chain in chains(deliveries):
        yield from run_chain(chain, consumer.process)

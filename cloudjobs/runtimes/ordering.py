"""FIFO ordering: messages of one group run one after another, and a message that stays on the queue
holds back the rest of its group (the one rule, for the worker, the Lambda runtime and ``drain``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Final

from cloudjobs.backends.base import Delivery
from cloudjobs.consumer import Consumer
from cloudjobs.invocation import Invocation
from cloudjobs.outcomes import Cancelled, Completed, DeadLetter, Outcome, Reason, Released


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
    return isinstance(outcome, _OUT_OF_THE_WAY)


_OUT_OF_THE_WAY: Final = (Completed, Cancelled, DeadLetter)
"""Outcomes after which a job no longer holds its group back (a tuple made once: a union of the
classes would be built at every call)."""


def run_chain(
    chain: Sequence[Delivery],
    process: Callable[[Delivery], tuple[Outcome, bool]],
    hold_back: Callable[[Delivery, Released], object],
    *,
    reason: Reason = Reason.FIFO_GROUP_BLOCKED,
) -> Iterator[tuple[Delivery, Outcome]]:
    """Run a chain in order; once a message cannot go on, hold back the rest unrun.

    Args:
        chain: the messages, in order.
        process: runs one message; returns its outcome and whether the message stays on the queue
            (a dead letter the DLQ refused stays, and holds back the group like a retry).
        hold_back: applies ``Released(reason)`` to a message that may not run.
        reason: why the rest is held back.
    """
    blocked = False
    for delivery in chain:
        if blocked:
            released = Released(reason=reason)
            hold_back(delivery, released)
            yield delivery, released
            continue
        outcome, stays = process(delivery)
        blocked = stays or not lets_group_continue(outcome)
        yield delivery, outcome


def applying(
    consumer: Consumer, invocation: Invocation, apply: Callable[[Delivery, Outcome], bool]
) -> Callable[[Delivery], tuple[Outcome, bool]]:
    """A ``process`` for :func:`run_chain`: the pipeline with ``apply`` (returning whether the
    message stays on the queue) as its applier."""

    def process(delivery: Delivery) -> tuple[Outcome, bool]:
        stays = True  # an apply that failed leaves the message on the queue

        def record(applied: Delivery, outcome: Outcome) -> None:
            nonlocal stays
            stays = apply(applied, outcome)

        return consumer.run(delivery, invocation, record), stays

    return process


def run_in_order(consumer: Consumer, deliveries: Sequence[Delivery]) -> Iterator[tuple[Delivery, Outcome]]:
    """Run a batch in this thread, chain by chain, applying nothing (for tests and tools)."""
    for chain in chains(deliveries):
        yield from run_chain(chain, lambda delivery: (consumer.process(delivery), False), _ignore)


def _ignore(delivery: Delivery, outcome: Outcome) -> None:
    """Apply nothing."""

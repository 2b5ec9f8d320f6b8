"""drain(): run a memory queue to completion in the calling thread, for tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cloudjobs.applier import OutcomeApplier
from cloudjobs.backends.base import MAX_BATCH_ENTRIES
from cloudjobs.backends.memory import MemoryBackend
from cloudjobs.consumer import Consumer
from cloudjobs.invocation import INLINE
from cloudjobs.outcomes import Outcome
from cloudjobs.runtimes.ordering import applying, chains, run_chain

if TYPE_CHECKING:
    from cloudjobs.scheduling.scheduler import Scheduler


@dataclass(frozen=True, slots=True)
class DrainReport:
    """What a drain did.

    Attributes:
        outcomes: each delivery's message id and outcome, in the order they were decided.
        counts: outcomes by kind (``completed``, ``retried``, ``dead_lettered``...).
    """

    outcomes: list[tuple[str, Outcome]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def completed(self) -> int:
        """Jobs whose handler returned."""
        return self.counts["completed"]

    @property
    def retried(self) -> int:
        """Failed attempts that were retried."""
        return self.counts["retried"]

    @property
    def dead_lettered(self) -> int:
        """Messages sent to the dead-letter queue."""
        return self.counts["dead_lettered"]


def drain(
    consumer: Consumer, backend: MemoryBackend, *, max_jobs: int = 10_000, skip_delays: bool = True
) -> DrainReport:
    """Receive and run until the queue holds nothing runnable (or ``max_jobs`` deliveries ran).

    With ``skip_delays``, the queue's time jumps to the next delayed or retried message instead
    of waiting for it.
    """
    return drain_queues([(consumer, backend)], max_jobs=max_jobs, skip_delays=skip_delays)


def drain_queues(
    queues: Sequence[tuple[Consumer, MemoryBackend]],
    *,
    max_jobs: int = 10_000,
    skip_delays: bool = True,
    until: datetime | None = None,
    scheduler: Scheduler | None = None,
) -> DrainReport:
    """:func:`drain` over several queues (an app's), each with its consumer, in turn, until none
    holds anything runnable; jobs one queue's handlers enqueue on another run too.

    With ``skip_delays``, time jumps to the earliest delayed or retried message of any queue (up to
    ``until``, when given; the first queue's time then ends at ``until``). A ``scheduler`` fires its
    schedules' ticks on the first queue's time as it passes them, up to ``until``.
    """
    lanes = []
    for consumer, backend in queues:
        applier = OutcomeApplier(backend, backend)
        lanes.append((consumer, backend, applier, applying(consumer, INLINE, applier.apply)))
    report = DrainReport()
    handled = 0
    while handled < max_jobs:
        ran = 0
        for consumer, backend, applier, process in lanes:
            if handled >= max_jobs:
                break
            deliveries = backend.receive(
                max_messages=min(MAX_BATCH_ENTRIES, max_jobs - handled), wait=timedelta(0)
            )
            if not deliveries:
                continue
            consumer.begin_batch(deliveries)
            for chain in chains(deliveries):
                for delivery, outcome in run_chain(chain, process, applier.apply):
                    report.outcomes.append((delivery.message_id, outcome))
            applier.flush()
            handled += len(deliveries)
            ran += len(deliveries)
        if ran:
            continue
        clock = lanes[0][1]
        next_tick = None
        if scheduler is not None:
            ticked = scheduler.run_pending(clock.now())
            if ticked.fired:
                continue
            next_tick = ticked.next_wakeup
        waiting = [
            (message.visible_at - backend.now(), index)
            for index, (_, backend, _, _) in enumerate(lanes)
            for message in backend.messages()
            if message.visible_at > backend.now() and (until is None or message.visible_at <= until)
        ]
        if next_tick is not None and until is not None and next_tick <= until:
            waiting.append((max(next_tick - clock.now(), timedelta(0)), 0))
        if not (skip_delays and waiting):
            break
        step, index = min(waiting)
        lanes[index][1].advance(step)
    if skip_delays and until is not None and lanes and lanes[0][1].now() < until:
        lanes[0][1].advance(until - lanes[0][1].now())
    for _, _, applier, _ in lanes:
        report.counts.update(applier.counts)
    return report

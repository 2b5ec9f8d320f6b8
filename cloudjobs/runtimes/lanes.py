"""A worker's lane: everything it keeps for one queue.

Each queue a worker consumes has its own lane: its backend and consumer (its ``QueueInfo`` and
``maxReceiveCount``), its visibility and heartbeat (queues may differ in visibility timeout), its
batched deletes and outcome applier (dead letters go to its own DLQ), its queue gauges, and a
receiver thread that long-polls that queue alone, ten messages at a time, whenever ten more fit in
the lane's room on the :class:`~cloudjobs.runtimes.dispatch.Dispatcher`. Handler threads are the
worker's, shared by every lane; they run a lane's chains through :meth:`Lane.handle`.

A standard queue's lane may have more receivers (``CLOUDJOBS_RECEIVERS``, 2 by default): the extra
ones poll only while an :class:`~cloudjobs.runtimes.overlap.OverlapTrigger` holds (the lane's
receives come back full, they wait on the network rather than on the process's CPU, and the machine
has idle CPU) and, like the first, only when a full batch fits in the lane's room beside what it
holds and what other polls under way took. Over a network that lifts the cap of ten messages per
round trip; on a busy machine or an idle queue the first receiver polls alone. A FIFO queue keeps
one receiver: two polls could hand one group's messages to two batches out of order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from cloudjobs.applier import BatchedDeletes, OutcomeApplier
from cloudjobs.backends.base import MAX_BATCH_ENTRIES, Backend, Delivery, QueueStatistics
from cloudjobs.clock import Clock
from cloudjobs.consumer import Consumer
from cloudjobs.errors import CloudjobsError
from cloudjobs.invocation import EventLoopThread, Invocation
from cloudjobs.outcomes import Outcome, Reason, Released
from cloudjobs.queues import DEFAULT_QUEUE
from cloudjobs.runtimes.dispatch import Dispatcher, Slot
from cloudjobs.runtimes.heartbeat import Heartbeat
from cloudjobs.runtimes.ordering import applying, chains, run_chain
from cloudjobs.runtimes.overlap import OverlapTrigger
from cloudjobs.runtimes.startup import check_dead_letter_queue, check_timeouts
from cloudjobs.telemetry.metrics import QueueMetricsReader

if TYPE_CHECKING:
    from cloudjobs.app import CloudJobs

logger = logging.getLogger("cloudjobs.worker")

_FLUSH_AFTER: Final = 0.25
"""Seconds a partial batch of deletes may wait for more before it is sent."""
_RECEIVE_ERROR_PAUSE: Final = 1.0
_ROOM_CHECK: Final = 0.5
"""Seconds a receiver waits for room before it notes that it is waiting, not stalled."""


class Lane:
    """One queue of a worker (see the module docstring). Build it with :func:`open_lane`.

    Args:
        name: the queue's name in the app.
        backend: the queue.
        consumer: the pipeline for its deliveries.
        visibility: the visibility each receive and extension sets.
        interval: the heartbeat's period.
        dispatcher: where received chains wait for a handler.
        cap: handler slots the lane may hold at once.
        limit: messages the lane may hold at once (running or waiting).
        clock: the time stamped on dead letters.
        loop: the worker's event loop for async handlers.
        stopping: set when the worker stops receiving.
        wait: the long-poll wait.
        on_tick: called on every wake-up of the lane's heartbeat.
        receivers: threads that may poll the queue at once (a FIFO queue's lane has one).
        trigger: when receivers beyond the first may poll (one built for the lane if None).
    """

    def __init__(
        self,
        name: str,
        *,
        backend: Backend,
        consumer: Consumer,
        visibility: timedelta,
        interval: timedelta,
        dispatcher: Dispatcher[Lane],
        cap: int,
        limit: int,
        clock: Clock,
        loop: EventLoopThread,
        stopping: threading.Event,
        wait: timedelta,
        on_tick: Callable[[], None],
        receivers: int = 1,
        trigger: OverlapTrigger | None = None,
    ) -> None:
        self.name = name
        self.backend = backend
        self.consumer = consumer
        self.visibility = visibility
        self.interval = interval
        self._dispatcher = dispatcher
        self._stopping = stopping
        self._wait = wait
        self._on_tick = on_tick
        # A full batch of deletes is sent by the handler that filled it once its message no longer
        # takes room: a receive waiting for that room does not wait on the delete's round trip.
        self.deletes = BatchedDeletes(backend, deferred=True)
        self.applier = OutcomeApplier(backend, clock, acknowledging=self.deletes)
        self.heartbeat = Heartbeat(backend, visibility=visibility, interval=interval, on_tick=self._tick)
        self.slot: Slot[Lane] = dispatcher.add_queue(
            name, self, cap=cap, limit=limit, batch=min(MAX_BATCH_ENTRIES, limit)
        )
        # Async handlers run on the worker's one loop; sync ones on its handler threads, their
        # deadlines fired and their leases renewed by this lane's heartbeat.
        self._invocation = Invocation(loop=loop, monitor=self.heartbeat)
        self._process = applying(consumer, self._invocation, self._apply)
        count = 1 if consumer.queue.is_fifo else receivers
        self.trigger: OverlapTrigger | None = None
        """When the extra receivers poll (None with one receiver)."""
        if count > 1:
            self.trigger = OverlapTrigger(self.slot.batch) if trigger is None else trigger
        self._receivers = [
            threading.Thread(
                target=self._receive_loop,
                args=(index,),
                name=f"cloudjobs-receiver-{name}" + (f"-{index}" if index else ""),
                daemon=True,
            )
            for index in range(count)
        ]
        self._metrics_reader: QueueMetricsReader | None = None
        now = time.monotonic()
        self._polled_at = [now] * count
        """By receiver: when it last completed a poll, found no room for one, or (an extra one) was
        not asked to poll."""
        self.receives = 0
        self.released = 0
        """Messages made visible again unstarted (by the receiver after a stop, or at shutdown)."""
        self._count_lock = threading.Lock()

    @property
    def polled_at(self) -> float:
        """When the receive loop that has gone longest without progress last made some: completed
        a poll, found no room for one, or (an extra receiver) was not asked to poll."""
        return min(self._polled_at)

    @property
    def queue(self) -> str:
        """The SQS queue's own name."""
        return self.consumer.queue.name

    def start(self, queue_metrics_interval: timedelta | None) -> None:
        """Start the heartbeat, the receiver and (with an interval, on a backend with counts) the
        queue gauges' reader."""
        self._polled_at[:] = [time.monotonic()] * len(self._receivers)
        self.heartbeat.start()
        for receiver in self._receivers:
            receiver.start()
        if queue_metrics_interval is not None and isinstance(self.backend, QueueStatistics):
            self._metrics_reader = QueueMetricsReader(
                self.backend, queue=self.queue, interval=queue_metrics_interval
            )
            self._metrics_reader.start()

    # -- receiving --------------------------------------------------------------------------------

    def _receive_loop(self, index: int) -> None:
        trigger = self.trigger
        polled_at = self._polled_at
        while not self._stopping.is_set():
            if index and trigger is not None and not trigger.on.wait(_ROOM_CHECK):
                # An extra receiver not asked to poll is idle, not stalled.
                polled_at[index] = time.monotonic()
                continue
            if not self._dispatcher.wait_for_room(self.slot, _ROOM_CHECK):
                # No room to poll: waiting for slots is progress, not a stall.
                polled_at[index] = time.monotonic()
                continue
            started = trigger.started() if trigger is not None else None
            try:
                deliveries = self.backend.receive(
                    max_messages=self.slot.batch, wait=self._wait, visibility=self.visibility
                )
            except CloudjobsError:
                self._dispatcher.give_back_room(self.slot)
                if trigger is not None:
                    trigger.failed()
                if self._stopping.is_set():
                    return  # a poll outliving its worker's stop: nothing it could return would start
                logger.exception("receiving from queue %s failed; trying again", self.name)
                self._stopping.wait(_RECEIVE_ERROR_PAUSE)
                continue
            polled_at[index] = time.monotonic()
            if started is not None and trigger is not None:
                trigger.finished(started, len(deliveries))
            with self._count_lock:
                self.receives += 1
            if not deliveries or self._stopping.is_set():
                self._dispatcher.give_back_room(self.slot)
                if deliveries:
                    self.release(deliveries)
                    return
                continue
            self.heartbeat.hold(deliveries)
            self.consumer.begin_batch(deliveries)
            if not self._dispatcher.put(self.slot, chains(deliveries), len(deliveries)):
                # The worker closed the dispatcher meanwhile: these never start.
                for delivery in deliveries:
                    self.heartbeat.release(delivery.receipt)
                self.release(deliveries)
                return

    def release(self, deliveries: list[Delivery]) -> int:
        """Make unstarted messages visible again at once (by tens); returns how many were released."""
        released = 0
        for start in range(0, len(deliveries), MAX_BATCH_ENTRIES):
            batch = deliveries[start : start + MAX_BATCH_ENTRIES]
            try:
                self.backend.change_visibility([(delivery.receipt, timedelta(0)) for delivery in batch])
            except CloudjobsError:
                logger.exception("releasing %d unstarted messages of queue %s failed", len(batch), self.name)
                continue
            released += len(batch)
        with self._count_lock:
            self.released += released
        return released

    # -- handling ---------------------------------------------------------------------------------

    def handle(self, chain: list[Delivery]) -> None:
        """Run a chain taken from the dispatcher on this thread, then give its handler slot back."""
        if len(chain) == 1:
            self._handle_one(chain[0])
            return
        settled = 0
        try:
            # Every outcome goes through _apply, which stops the heartbeat extending its message.
            for _ in run_chain(chain, self._run, self._apply):
                if settled < len(chain) - 1:
                    # The last one is given back with the slot, below: one lock for a lone message.
                    self._dispatcher.settled(self.slot, 1)
                    settled += 1
        except Exception:
            # Never let one message take a handler thread down: the rest are redelivered later.
            logger.exception("handling message %s failed", chain[settled].message_id)
            for delivery in chain[settled:]:
                self.heartbeat.release(delivery.receipt)
        self._dispatcher.settled(self.slot, len(chain) - settled, ends_chain=True)
        self.deletes.send_due()

    def _handle_one(self, delivery: Delivery) -> None:
        """A chain of one (every message of a standard queue): nothing behind it to hold back, so
        the pipeline applies its outcome itself, without a chain's wrapper that reports whether the
        message stays."""
        try:
            if self._stopping.is_set():
                self._apply(delivery, Released(reason=Reason.SHUTDOWN))
            else:
                self.consumer.run(delivery, self._invocation, self._apply)
        except Exception:
            # Never let one message take a handler thread down: it is redelivered later.
            logger.exception("handling message %s failed", delivery.message_id)
            self.heartbeat.release(delivery.receipt)
        self._dispatcher.settled(self.slot, 1, ends_chain=True)
        self.deletes.send_due()

    def _run(self, delivery: Delivery) -> tuple[Outcome, bool]:
        if self._stopping.is_set():
            released = Released(reason=Reason.SHUTDOWN)
            return released, self._apply(delivery, released)
        return self._process(delivery)

    def _apply(self, delivery: Delivery, outcome: Outcome) -> bool:
        self.heartbeat.release(delivery.receipt)
        return self.applier.apply(delivery, outcome)

    # -- upkeep -----------------------------------------------------------------------------------

    def _tick(self) -> None:
        age = self.deletes.oldest_pending_age()
        if age is not None and age >= _FLUSH_AFTER:
            self.applier.flush()
        if self._metrics_reader is not None:
            self._metrics_reader.poke()
        self._on_tick()

    def stop_reading_metrics(self) -> None:
        """Stop the queue gauges' reader, if it runs."""
        if self._metrics_reader is not None:
            self._metrics_reader.stop()

    def join_receiver(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the polls under way to return."""
        deadline = time.monotonic() + timeout
        for receiver in self._receivers:
            receiver.join(max(0.0, deadline - time.monotonic()))

    def close(self, *, heartbeat_timeout: float | None) -> None:
        """Send the buffered deletes (and wait for those handlers are sending) and stop the
        heartbeat."""
        self.applier.flush()
        self.deletes.wait_sent()
        self.heartbeat.stop(timeout=heartbeat_timeout)


def open_lane(
    app: CloudJobs,
    name: str,
    *,
    dispatcher: Dispatcher[Lane],
    cap: int,
    limit: int,
    loop: EventLoopThread,
    stopping: threading.Event,
    on_tick: Callable[[], None],
) -> Lane:
    """Check one of the app's queues and build its lane (reads the queue's configuration).

    The visibility is ``CLOUDJOBS_VISIBILITY_TIMEOUT_SECONDS`` when set, else the queue's own; the
    heartbeat beats at ``CLOUDJOBS_HEARTBEAT_INTERVAL_SECONDS``, else a third of it.

    Raises:
        ConfigurationError: the queue has no dead-letter queue, the heartbeat is not well inside
            its visibility, or a job's timeout is beyond SQS's 12-hour visibility cap.
        BackendError: the queue cannot be reached or does not exist.
    """
    settings = app.settings
    backend = app.backend_of(name)
    consumer = app.consumer(name)
    info = consumer.queue
    # CLOUDJOBS_DLQ_URL names the default queue's DLQ; a named queue finds its own from its redrive policy.
    check_dead_letter_queue(backend, info, settings.dlq_url if name == DEFAULT_QUEUE else None)
    visibility = (
        timedelta(seconds=settings.visibility_timeout_seconds)
        if settings.visibility_timeout_seconds
        else info.visibility_timeout
    )
    interval = settings.heartbeat_interval(visibility)
    check_timeouts(consumer, app.registry.values())
    return Lane(
        name,
        backend=backend,
        consumer=consumer,
        visibility=visibility,
        interval=interval,
        dispatcher=dispatcher,
        cap=cap,
        limit=limit,
        clock=app.clock,
        loop=loop,
        stopping=stopping,
        wait=timedelta(seconds=settings.wait_time_seconds),
        on_tick=on_tick,
        receivers=settings.receivers,
    )

"""Worker: the long-running consumer for ECS (or any host with a process supervisor).

Threads, each with one job:

- the **receiver** long-polls the queue, ten messages at a time, and only when ten more fit in
  ``concurrency + prefetch`` (so every message held can start before its visibility matters, and
  requests carry full batches);
- ``concurrency`` **handler threads** run jobs (async handlers run on one event loop thread, their
  handler thread waiting for them), so no more than ``concurrency`` handlers ever run at once;
- the **heartbeat** extends the visibility of held messages, fires sync handlers' deadlines and
  flushes the batched deletes;
- the **queue metrics reader** sets the queue depth, in-flight and DLQ depth gauges from the queue's
  approximate counts, once per ``queue_metrics_interval`` (on backends that report counts).

A sync handler that passes its timeout cannot be stopped (Python threads cannot be killed): its
attempt is settled at once as a retryable :class:`~cloudjobs.errors.JobTimeoutError`, but its message
stays hidden (the heartbeat goes on extending it) and its thread keeps its concurrency slot and its
idempotency lease until the function returns; only then is the retry's backoff applied, so attempts
of one job never overlap.

``stop()`` (or SIGTERM/SIGINT) stops receiving, releases messages that never started (visibility 0),
lets running jobs finish within the shutdown deadline and returns a :class:`ShutdownReport`. A long
poll under way is not waited for (it may last 20 s): what it still returns is released by the
receiver if the process lives on, and otherwise reappears after the visibility timeout. A second
SIGTERM/SIGINT stops waiting for running jobs at once.

A worker refuses to start on a queue without a dead-letter queue (a job that fails for good would
be received forever), and reports whether it can still take work (:mod:`cloudjobs.runtimes.health`).
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from cloudjobs.applier import BatchedDeletes, OutcomeApplier
from cloudjobs.backends.base import MAX_BATCH_ENTRIES, Backend, Delivery, QueueStatistics
from cloudjobs.consumer import Consumer
from cloudjobs.errors import CloudjobsError, ConfigurationError
from cloudjobs.invocation import EventLoopThread, Invocation
from cloudjobs.outcomes import Outcome, Reason, Released
from cloudjobs.runtimes.health import DEFAULT_HEALTH_ADDRESS, HealthServer, HealthWatch, WorkerHealth, assess
from cloudjobs.runtimes.heartbeat import Heartbeat
from cloudjobs.runtimes.ordering import applying, chains, run_chain
from cloudjobs.runtimes.signals import install_stop_signals
from cloudjobs.runtimes.startup import check_dead_letter_queue, check_stall_timeout, check_timeouts
from cloudjobs.telemetry.metrics import DEFAULT_QUEUE_METRICS_INTERVAL, QueueMetricsReader

if TYPE_CHECKING:
    from cloudjobs.app import CloudJobs

logger = logging.getLogger("cloudjobs.worker")

_FLUSH_AFTER = 0.25
"""Seconds a partial batch of deletes may wait for more before it is sent."""
_RECEIVE_ERROR_PAUSE = 1.0
_RECEIVER_GRACE = 1.0
"""Seconds a stop waits for a poll under way to return (so its messages are released, not left
hidden) before giving up on it: a long poll may last 20 s."""
_FORCED_WAIT = 1.0
"""Seconds a forced stop still gives the heartbeat and the event loop to wind down."""


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """How a worker's run ended.

    Attributes:
        released: messages that never started, made visible again at once.
        abandoned: messages whose jobs were still running when the worker stopped waiting (at the
            shutdown deadline, or at a second signal), with on FIFO queues those queued behind them
            in their group; they reappear after the visibility timeout.
        forced_by: the second signal that ended the wait for running jobs, if one did.
    """

    released: int = 0
    abandoned: int = 0
    forced_by: signal.Signals | None = None


class Worker:
    """Consumes the queue until stopped; see the module docstring for how.

    Args:
        app: the job registry and queue.
        concurrency: handlers run at once.
        prefetch: messages held beyond the concurrency.
        shutdown_timeout: how long a stop waits for running jobs.
        queue_metrics_interval: time between reads of the queue's counts for the queue gauges
            (one GetQueueAttributes per queue each time); None turns the reader off, and so does
            the app's ``Telemetry(is_enabled=False)``.
        stall_timeout: how long the receive loop may go without completing a poll before the worker
            reports itself stalled (default ``CLOUDJOBS_STALL_TIMEOUT_SECONDS``, 120 s); it must
            exceed the long-poll wait.
        health_port: serve ``GET /healthz`` on this port while running (0 picks a free one, see
            :attr:`health_server`); None serves nothing.
        health_address: the address the health endpoint listens on.

    Raises:
        ConfigurationError: ``concurrency`` is below 1, ``queue_metrics_interval`` is not positive,
            or ``stall_timeout`` does not exceed the long-poll wait.
    """

    def __init__(
        self,
        app: CloudJobs,
        *,
        concurrency: int | None = None,
        prefetch: int | None = None,
        shutdown_timeout: timedelta | None = None,
        queue_metrics_interval: timedelta | None = DEFAULT_QUEUE_METRICS_INTERVAL,
        stall_timeout: timedelta | None = None,
        health_port: int | None = None,
        health_address: str = DEFAULT_HEALTH_ADDRESS,
    ) -> None:
        settings = app.settings
        self.queue_metrics_interval = queue_metrics_interval
        self._app = app
        self.concurrency = concurrency or settings.concurrency
        if self.concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1", setting="CLOUDJOBS_CONCURRENCY")
        if queue_metrics_interval is not None and queue_metrics_interval <= timedelta(0):
            raise ConfigurationError(
                "the interval between queue metric reads must be positive (None turns them off)",
                setting="queue_metrics_interval",
            )
        self.prefetch = settings.prefetch if prefetch is None else prefetch
        self.shutdown_timeout = (
            shutdown_timeout if shutdown_timeout is not None else settings.shutdown_timeout
        )
        self.stall_timeout = stall_timeout if stall_timeout is not None else settings.stall_timeout
        check_stall_timeout(self.stall_timeout, settings.wait_time_seconds)
        self._health_port = health_port
        self._health_address = health_address
        self.health_server: HealthServer | None = None
        """The health endpoint while the worker runs with a ``health_port``."""
        self._stop_requested = threading.Event()
        self._stopping = threading.Event()
        self._capacity = threading.Condition()
        self._outstanding = 0
        self._work: queue.SimpleQueue[list[Delivery] | None] = queue.SimpleQueue()
        self._loop = EventLoopThread("cloudjobs-event-loop")
        self.started = threading.Event()
        self._applier: OutcomeApplier | None = None
        self._heartbeat: Heartbeat | None = None
        self._forced_by: signal.Signals | None = None
        self._released = 0
        # When the receive loop last completed a poll, or found no room for one (not a stall).
        self._polled_at = time.monotonic()
        self.receives = 0

    @property
    def counts(self) -> Counter[str]:
        """Outcomes applied so far, by kind (``completed``, ``retried``, ``dead_lettered``...)."""
        counts = Counter(self._applier.counts) if self._applier else Counter()
        if self._released:
            counts["released"] += self._released
        return counts

    def health(self) -> WorkerHealth:
        """Whether the worker can still take work (see :mod:`cloudjobs.runtimes.health`)."""
        heartbeat = self._heartbeat
        now = time.monotonic()
        return assess(
            now=now,
            concurrency=self.concurrency,
            overdue_handlers=heartbeat.overdue if heartbeat is not None else 0,
            polled_at=self._polled_at,
            heartbeat_at=heartbeat.last_tick if heartbeat is not None else now,
            stall_timeout=self.stall_timeout,
            is_receiving=not self._stopping.is_set(),
        )

    def stop(self) -> None:
        """Ask the worker to shut down gracefully; safe from any thread and from signal handlers."""
        self._stop_requested.set()

    def _force(self, received: signal.Signals) -> None:
        # The shutdown's wait for running jobs checks this (a second signal ends it).
        self._forced_by = received
        self._stop_requested.set()

    def run(self) -> ShutdownReport:
        """Consume until :meth:`stop` or SIGTERM/SIGINT, then shut down gracefully and return.

        When no logging is configured at all, cloudjobs' own logs go to stderr as text at INFO (see
        :func:`cloudjobs.logs.install_default_logging`).

        Returns:
            What the shutdown released and left running, and whether a second signal forced it.

        Raises:
            ConfigurationError: a setting contradicts the queue, the queue has no dead-letter queue,
                or the health port cannot be bound (checked before anything runs).
            BackendError: the queue cannot be reached or does not exist (at start-up).
        """
        from cloudjobs.logs import install_default_logging

        install_default_logging()
        backend = self._app.backend
        consumer = self._app.consumer()
        info = consumer.queue
        settings = self._app.settings
        check_dead_letter_queue(backend, info, settings.dlq_url)
        visibility = (
            timedelta(seconds=settings.visibility_timeout_seconds)
            if settings.visibility_timeout_seconds
            else info.visibility_timeout
        )
        interval = settings.heartbeat_interval(visibility)
        check_timeouts(consumer, self._app.registry.values())
        deletes = BatchedDeletes(backend)
        applier = self._applier = OutcomeApplier(backend, self._app.clock, acknowledging=deletes)
        watch = HealthWatch(info.name)

        def on_tick() -> None:
            self._flush_if_due(deletes, applier)
            watch.observe(self.health())

        heartbeat = self._heartbeat = Heartbeat(
            backend, visibility=visibility, interval=interval, on_tick=on_tick
        )
        self._visibility = visibility
        if self._health_port is not None:
            self.health_server = HealthServer(
                self.health, port=self._health_port, address=self._health_address
            )
        restore = install_stop_signals(self.stop, self._force)
        # Async handlers run on one shared loop (started on first use); sync ones on the handler
        # threads, their deadlines fired and their leases renewed by the heartbeat.
        invocation = Invocation(loop=self._loop, monitor=heartbeat)
        threads = [
            threading.Thread(
                target=self._handle_loop,
                args=(consumer, applier, heartbeat, invocation),
                name=f"cloudjobs-handler-{index}",
                daemon=True,
            )
            for index in range(self.concurrency)
        ]
        receiver = threading.Thread(
            target=self._receive_loop,
            args=(backend, consumer, heartbeat),
            name="cloudjobs-receiver",
            daemon=True,
        )
        metrics_reader = self._queue_metrics_reader(backend, info.name)
        self._polled_at = time.monotonic()
        heartbeat.start()
        for thread in threads:
            thread.start()
        receiver.start()
        if metrics_reader is not None:
            metrics_reader.start()
        logger.info(
            "worker started on queue %s: concurrency %d, prefetch %d, visibility %ss, heartbeat %ss",
            info.name,
            self.concurrency,
            self.prefetch,
            visibility.total_seconds(),
            interval.total_seconds(),
        )
        if self.health_server is not None:
            self.health_server.start()
        self.started.set()
        try:
            self._stop_requested.wait()
        finally:
            if metrics_reader is not None:
                metrics_reader.stop()
            try:
                report = self._shutdown(backend, receiver, threads, heartbeat, applier)
            finally:
                if self.health_server is not None:
                    self.health_server.close()
                restore()
        return report

    # -- receiving --------------------------------------------------------------------------------

    def _receive_loop(self, backend: Backend, consumer: Consumer, heartbeat: Heartbeat) -> None:
        limit = self.concurrency + self.prefetch
        batch = min(MAX_BATCH_ENTRIES, limit)
        wait = timedelta(seconds=self._app.settings.wait_time_seconds)
        while not self._stopping.is_set():
            with self._capacity:
                while self._outstanding + batch > limit and not self._stopping.is_set():
                    # No room to poll: waiting for slots is progress, not a stall.
                    self._polled_at = time.monotonic()
                    self._capacity.wait(0.5)
                if self._stopping.is_set():
                    return
            try:
                deliveries = backend.receive(max_messages=batch, wait=wait, visibility=self._visibility)
            except CloudjobsError:
                logger.exception("receiving from the queue failed; trying again")
                self._stopping.wait(_RECEIVE_ERROR_PAUSE)
                continue
            self._polled_at = time.monotonic()
            self.receives += 1
            if not deliveries:
                continue
            if self._stopping.is_set():
                self._release_now(backend, deliveries)
                return
            heartbeat.hold(deliveries)
            consumer.prefetch(deliveries)
            with self._capacity:
                self._outstanding += len(deliveries)
            for chain in chains(deliveries):
                self._work.put(chain)

    def _release_now(self, backend: Backend, deliveries: list[Delivery]) -> None:
        for start in range(0, len(deliveries), MAX_BATCH_ENTRIES):
            batch = deliveries[start : start + MAX_BATCH_ENTRIES]
            try:
                backend.change_visibility([(delivery.receipt, timedelta(0)) for delivery in batch])
            except CloudjobsError:
                logger.exception("releasing %d unstarted messages failed", len(batch))
                continue
            with self._capacity:
                self._released += len(batch)

    # -- handling ---------------------------------------------------------------------------------

    def _handle_loop(
        self, consumer: Consumer, applier: OutcomeApplier, heartbeat: Heartbeat, invocation: Invocation
    ) -> None:
        def apply(delivery: Delivery, outcome: Outcome) -> bool:
            heartbeat.release(delivery.receipt)
            return applier.apply(delivery, outcome)

        run = applying(consumer, invocation, apply)

        def process(delivery: Delivery) -> tuple[Outcome, bool]:
            if self._stopping.is_set():
                released = Released(reason=Reason.SHUTDOWN)
                return released, apply(delivery, released)
            return run(delivery)

        while True:
            chain = self._work.get()
            if chain is None:
                return
            done = 0
            try:
                for delivery, _ in run_chain(chain, process, apply):
                    heartbeat.release(delivery.receipt)
                    done += 1
                    self._finished(1)
            except Exception:
                # Never let one message take a handler thread down: the rest are redelivered later.
                logger.exception("handling message %s failed", chain[done].message_id)
                for delivery in chain[done:]:
                    heartbeat.release(delivery.receipt)
                self._finished(len(chain) - done)

    def _finished(self, count: int) -> None:
        with self._capacity:
            self._outstanding -= count
            self._capacity.notify_all()

    # -- shutting down ----------------------------------------------------------------------------

    def _shutdown(
        self,
        backend: Backend,
        receiver: threading.Thread,
        threads: list[threading.Thread],
        heartbeat: Heartbeat,
        applier: OutcomeApplier,
    ) -> ShutdownReport:
        logger.info("worker stopping: releasing unstarted messages, finishing running jobs")
        deadline = time.monotonic() + self.shutdown_timeout.total_seconds()
        self._stopping.set()
        # Released at once, not when a slot frees up: another worker can start them now.
        self._release_unstarted(backend, heartbeat)
        with self._capacity:
            self._capacity.notify_all()
            while self._outstanding > 0 and self._forced_by is None and time.monotonic() < deadline:
                self._capacity.wait(max(0.0, min(0.25, deadline - time.monotonic())))
        # A poll that returned meanwhile may have queued more: they never start either.
        self._release_unstarted(backend, heartbeat)
        with self._capacity:
            abandoned = self._outstanding
        forced = self._forced_by is not None
        # A long poll under way is not waited out (up to 20 s): the receiver releases what it
        # returns if this process lives on; otherwise it reappears after the visibility timeout.
        if not forced:
            receiver.join(max(0.0, min(_RECEIVER_GRACE, deadline - time.monotonic())))
        for _ in threads:
            self._work.put(None)
        applier.flush()
        heartbeat.stop(timeout=_FORCED_WAIT if forced else None)
        # Waited for briefly: an async handler that blocks the loop must not hold the exit up.
        self._loop.close(timeout=_FORCED_WAIT if forced else max(1.0, deadline - time.monotonic()))
        if abandoned:
            logger.warning(
                "%d jobs were still running when the worker stopped waiting (%s); their messages "
                "reappear after the visibility timeout",
                abandoned,
                f"forced by a second {self._forced_by.name}" if self._forced_by else "shutdown deadline",
            )
        logger.info("worker stopped: %s", dict(self.counts))
        return ShutdownReport(released=self._released, abandoned=abandoned, forced_by=self._forced_by)

    def _release_unstarted(self, backend: Backend, heartbeat: Heartbeat) -> None:
        """Release every received chain no handler has taken yet (visibility 0, by tens)."""
        unstarted: list[Delivery] = []
        while True:
            try:
                chain = self._work.get_nowait()
            except queue.Empty:
                break
            if chain is not None:
                unstarted.extend(chain)
        if not unstarted:
            return
        for delivery in unstarted:
            heartbeat.release(delivery.receipt)
        self._release_now(backend, unstarted)
        self._finished(len(unstarted))
        logger.info("released %d messages that never started", len(unstarted))

    def _queue_metrics_reader(self, backend: Backend, queue: str) -> QueueMetricsReader | None:
        if (
            self.queue_metrics_interval is None
            or not self._app.telemetry.is_enabled
            or not isinstance(backend, QueueStatistics)
        ):
            return None
        return QueueMetricsReader(backend, queue=queue, interval=self.queue_metrics_interval)

    def _flush_if_due(self, deletes: BatchedDeletes, applier: OutcomeApplier) -> None:
        age = deletes.oldest_pending_age()
        if age is not None and age >= _FLUSH_AFTER:
            applier.flush()

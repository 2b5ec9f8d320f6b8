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
attempt is settled at once as a retryable :class:`~cloudjobs.errors.JobTimeoutError`, its visibility
is no longer extended, and its thread keeps its concurrency slot (and its idempotency lease, so no
retry runs beside it) until the function returns.

``stop()`` (or SIGTERM/SIGINT) stops receiving, lets running jobs finish within the shutdown
deadline, releases messages that never started (visibility 0) and returns.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING

from cloudjobs.applier import BatchedDeletes, OutcomeApplier
from cloudjobs.backends.base import MAX_BATCH_ENTRIES, MAX_VISIBILITY, Backend, Delivery, QueueStatistics
from cloudjobs.consumer import Consumer
from cloudjobs.errors import CloudjobsError, ConfigurationError
from cloudjobs.invocation import EventLoopThread, Invocation
from cloudjobs.outcomes import Outcome, Reason, Released
from cloudjobs.runtimes.heartbeat import Heartbeat
from cloudjobs.runtimes.ordering import applying, chains, run_chain
from cloudjobs.telemetry.metrics import DEFAULT_QUEUE_METRICS_INTERVAL, QueueMetricsReader

if TYPE_CHECKING:
    from cloudjobs.app import CloudJobs

logger = logging.getLogger("cloudjobs.worker")

_FLUSH_AFTER = 0.25
"""Seconds a partial batch of deletes may wait for more before it is sent."""
_RECEIVE_ERROR_PAUSE = 1.0


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

    Raises:
        ConfigurationError: ``concurrency`` is below 1 or ``queue_metrics_interval`` is not positive.
    """

    def __init__(
        self,
        app: CloudJobs,
        *,
        concurrency: int | None = None,
        prefetch: int | None = None,
        shutdown_timeout: timedelta | None = None,
        queue_metrics_interval: timedelta | None = DEFAULT_QUEUE_METRICS_INTERVAL,
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
        self._stop_requested = threading.Event()
        self._stopping = threading.Event()
        self._capacity = threading.Condition()
        self._outstanding = 0
        self._work: queue.SimpleQueue[list[Delivery] | None] = queue.SimpleQueue()
        self._loop = EventLoopThread("cloudjobs-event-loop")
        self.started = threading.Event()
        self._applier: OutcomeApplier | None = None
        self.receives = 0

    @property
    def counts(self) -> Counter[str]:
        """Outcomes applied so far, by kind (``completed``, ``retried``, ``dead_lettered``...)."""
        return Counter(self._applier.counts) if self._applier else Counter()

    def stop(self) -> None:
        """Ask the worker to shut down gracefully; safe from any thread and from signal handlers."""
        self._stop_requested.set()

    def run(self) -> None:
        """Consume until :meth:`stop` or SIGTERM/SIGINT, then shut down gracefully and return.

        Raises:
            ConfigurationError: a setting contradicts the queue (checked before anything runs).
            BackendError: the queue cannot be reached or does not exist (at start-up).
        """
        backend = self._app.backend
        consumer = self._app.consumer()
        info = consumer.queue
        settings = self._app.settings
        visibility = (
            timedelta(seconds=settings.visibility_timeout_seconds)
            if settings.visibility_timeout_seconds
            else info.visibility_timeout
        )
        interval = settings.heartbeat_interval(visibility)
        self._check_timeouts(consumer)
        deletes = BatchedDeletes(backend)
        applier = self._applier = OutcomeApplier(backend, self._app.clock, acknowledging=deletes)
        heartbeat = Heartbeat(
            backend,
            visibility=visibility,
            interval=interval,
            on_tick=lambda: self._flush_if_due(deletes, applier),
        )
        self._visibility = visibility
        restore = self._install_signal_handlers()
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
        self.started.set()
        try:
            self._stop_requested.wait()
        finally:
            if metrics_reader is not None:
                metrics_reader.stop()
            self._shutdown(receiver, threads, heartbeat, applier)
            restore()

    # -- receiving --------------------------------------------------------------------------------

    def _receive_loop(self, backend: Backend, consumer: Consumer, heartbeat: Heartbeat) -> None:
        limit = self.concurrency + self.prefetch
        batch = min(MAX_BATCH_ENTRIES, limit)
        wait = timedelta(seconds=self._app.settings.wait_time_seconds)
        while not self._stopping.is_set():
            with self._capacity:
                while self._outstanding + batch > limit and not self._stopping.is_set():
                    self._capacity.wait(0.5)
                if self._stopping.is_set():
                    return
            try:
                deliveries = backend.receive(max_messages=batch, wait=wait, visibility=self._visibility)
            except CloudjobsError:
                logger.exception("receiving from the queue failed; trying again")
                self._stopping.wait(_RECEIVE_ERROR_PAUSE)
                continue
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
        try:
            backend.change_visibility([(delivery.receipt, timedelta(0)) for delivery in deliveries])
        except CloudjobsError:
            logger.exception("releasing %d unstarted messages failed", len(deliveries))

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
        receiver: threading.Thread,
        threads: list[threading.Thread],
        heartbeat: Heartbeat,
        applier: OutcomeApplier,
    ) -> None:
        logger.info("worker stopping: finishing running jobs, releasing the rest")
        deadline = time.monotonic() + self.shutdown_timeout.total_seconds()
        self._stopping.set()
        with self._capacity:
            self._capacity.notify_all()
            while self._outstanding > 0 and time.monotonic() < deadline:
                self._capacity.wait(max(0.0, min(0.5, deadline - time.monotonic())))
            unfinished = self._outstanding
        # A long poll under way may still return messages: the receiver releases them itself.
        receiver.join(max(0.0, deadline - time.monotonic()))
        for _ in threads:
            self._work.put(None)
        applier.flush()
        heartbeat.stop()
        # Waited for briefly: an async handler that blocks the loop must not hold the exit up.
        self._loop.close(timeout=max(1.0, deadline - time.monotonic()))
        if unfinished:
            logger.warning(
                "%d jobs did not finish within the shutdown deadline; their messages reappear "
                "after the visibility timeout",
                unfinished,
            )
        logger.info("worker stopped: %s", dict(applier.counts))

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

    def _check_timeouts(self, consumer: Consumer) -> None:
        for definition in self._app.registry.values():
            if consumer.timeout_of(definition) > MAX_VISIBILITY:
                raise ConfigurationError(
                    f"job {definition.name!r} has a timeout beyond SQS's 12-hour visibility cap; "
                    "its message would reappear while it runs",
                    setting="CLOUDJOBS_JOB_TIMEOUT_SECONDS",
                )

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("received %s", signal.Signals(signum).name)
            self.stop()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

"""Worker: the long-running consumer for ECS (or any host with a process supervisor).

Threads, each with one job:

- a **receiver** per queue long-polls its queue, ten messages at a time, and only when ten more fit
  in that queue's room (``min(queue cap, concurrency) + prefetch``), so every message held can start
  before its visibility matters, and requests carry full batches; on a standard queue whose
  receives come back full and wait on the network, a second receiver polls beside it while the
  machine has idle CPU (``CLOUDJOBS_RECEIVERS``; see :mod:`cloudjobs.runtimes.lanes`), and each
  poll takes its ten of the room before it asks;
- ``concurrency`` **handler threads**, shared by every queue, run jobs (async handlers run on one
  event loop thread, their handler thread waiting for them), so no more than ``concurrency``
  handlers ever run at once; each takes its next job from the queue the policy picks (see below);
- a **heartbeat** per queue extends the visibility of that queue's held messages, fires sync
  handlers' deadlines and flushes the queue's batched deletes;
- a **queue metrics reader** per queue sets its depth, in-flight and DLQ depth gauges from the
  queue's approximate counts, once per ``queue_metrics_interval`` (on backends that report counts).

Several queues (``queues=``; see :mod:`cloudjobs.runtimes.dispatch` for the policies):

- **weighted** (``{"critical": 6, "default": 3, "bulk": 1}``): while every queue has work waiting,
  each gets its weight's share of the handler starts, interleaved; an idle queue's share goes to
  the others;
- **strict order** (``["critical", "default"]``): the first queue with work waiting, except that
  lower queues with work waiting get at least one start in ten (the starvation guard);
- ``queue_concurrency={"bulk": 4}`` caps the handler slots a queue may hold, and with them the
  messages it may hold (``cap + prefetch``): a saturating queue leaves the other slots, and the
  other queues' receives, to the rest.

A long poll covers one queue, so an idle worker on N queues sends at most N ReceiveMessage requests
per ``CLOUDJOBS_WAIT_TIME_SECONDS`` (20 s: 3 a minute per queue), and a job sent to an idle queue is
picked up as soon as it arrives (the open long poll returns it), not after a wait period. Under load
each queue's receives and deletes still carry ten messages.

A sync handler that passes its timeout cannot be stopped (Python threads cannot be killed): its
attempt is settled at once as a retryable :class:`~cloudjobs.errors.JobTimeoutError`, but its message
stays hidden (the heartbeat goes on extending it) and its thread keeps its concurrency slot and its
idempotency lease until the function returns; only then is the retry's backoff applied, so attempts
of one job never overlap.

``stop()`` (or SIGTERM/SIGINT) stops receiving, releases messages of every queue that never started
(visibility 0), lets running jobs finish within the shutdown deadline and returns a
:class:`ShutdownReport`. A long poll under way is not waited for (it may last 20 s): what it still
returns is released by its receiver if the process lives on, and otherwise reappears after the
visibility timeout. A second SIGTERM/SIGINT stops waiting for running jobs at once.

A worker refuses to start on a queue without a dead-letter queue (a job that fails for good would
be received forever), and reports whether it can still take work (:mod:`cloudjobs.runtimes.health`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from cloudjobs.backends.base import Preparable
from cloudjobs.errors import CloudjobsError, ConfigurationError
from cloudjobs.invocation import EventLoopThread
from cloudjobs.runtimes.dispatch import Dispatcher
from cloudjobs.runtimes.health import DEFAULT_HEALTH_ADDRESS, HealthWatch, WorkerHealth, assess
from cloudjobs.runtimes.lanes import Lane, open_lane
from cloudjobs.runtimes.queue_plan import WorkerQueues, plan_queues
from cloudjobs.runtimes.signals import install_stop_signals
from cloudjobs.runtimes.startup import check_stall_timeout
from cloudjobs.telemetry.metrics import DEFAULT_QUEUE_METRICS_INTERVAL

if TYPE_CHECKING:
    from cloudjobs.app import CloudJobs
    from cloudjobs.runtimes.health_server import HealthServer

logger = logging.getLogger("cloudjobs.worker")

_RECEIVER_GRACE = 1.0
"""Seconds a stop waits for the polls under way to return (so their messages are released, not left
hidden) before giving up on them: a long poll may last 20 s."""
_FORCED_WAIT = 1.0
"""Seconds a forced stop still gives the heartbeats and the event loop to wind down."""


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """How a worker's run ended (over every queue it consumed).

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
    """Consumes the app's queues until stopped; see the module docstring for how.

    Args:
        app: the job registry and queues.
        queues: the queues to consume: weights by name (``{"critical": 6, "bulk": 1}``, weighted),
            names in strict order (``["critical", "default"]``), or None for the default queue alone.
        concurrency: handlers run at once, over every queue.
        queue_concurrency: handler slots a queue may hold at once, by name (``{"bulk": 4}``).
        prefetch: messages a queue may hold beyond its handler slots.
        shutdown_timeout: how long a stop waits for running jobs.
        queue_metrics_interval: time between reads of the queues' counts for the queue gauges
            (one GetQueueAttributes per queue, and one per DLQ, each time); None turns the readers
            off, and so does the app's ``Telemetry(is_enabled=False)``.
        stall_timeout: how long a receive loop may go without completing a poll before the worker
            reports itself stalled (default ``CLOUDJOBS_STALL_TIMEOUT_SECONDS``, 120 s); it must
            exceed the long-poll wait.
        health_port: serve ``GET /healthz`` on this port while running (0 picks a free one, see
            :attr:`health_server`); None serves nothing.
        health_address: the address the health endpoint listens on.

    Raises:
        UnknownQueueError: ``queues`` names a queue the app does not configure.
        ConfigurationError: ``concurrency`` is below 1, ``queues`` or ``queue_concurrency`` is
            malformed (see :func:`~cloudjobs.runtimes.queue_plan.plan_queues`),
            ``queue_metrics_interval`` is not positive, or ``stall_timeout`` does not exceed the
            long-poll wait.
    """

    def __init__(
        self,
        app: CloudJobs,
        *,
        queues: WorkerQueues | None = None,
        concurrency: int | None = None,
        queue_concurrency: Mapping[str, int] | None = None,
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
        self.plan = plan_queues(queues, queue_concurrency, known=lambda: app.queue_names)
        """The queues consumed, their weights or order, and their caps."""
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
        self._loop = EventLoopThread("cloudjobs-event-loop")
        self.started = threading.Event()
        self._lanes: list[Lane] = []
        self._watch: HealthWatch | None = None
        self._forced_by: signal.Signals | None = None
        self._prepare_backends()

    def _prepare_backends(self) -> None:
        # Clients (the queues', the idempotency store's) are built now rather than in run():
        # building one costs tens of milliseconds of CPU, which the first poll would otherwise wait
        # for. Nothing is sent; what fails here fails again, and is raised, when run() checks the
        # queues or a job first needs its store.
        for name in self.plan.names:
            with contextlib.suppress(CloudjobsError):
                backend = self._app.backend_of(name)
                if isinstance(backend, Preparable):
                    backend.prepare()
        with contextlib.suppress(CloudjobsError):  # ConfigurationError: the app has no store
            store = self._app.idempotency_store
            if isinstance(store, Preparable):
                store.prepare()

    @property
    def queues(self) -> tuple[str, ...]:
        """The app's queues this worker consumes, in the order given."""
        return self.plan.names

    @property
    def counts(self) -> Counter[str]:
        """Outcomes applied so far over every queue, by kind (``completed``, ``retried``,
        ``dead_lettered``, ``released``...)."""
        counts: Counter[str] = Counter()
        for queue_counts in self.counts_by_queue.values():
            counts.update(queue_counts)
        return counts

    @property
    def counts_by_queue(self) -> dict[str, Counter[str]]:
        """:attr:`counts` of each queue, by its name in the app (empty before :meth:`run`)."""
        by_queue: dict[str, Counter[str]] = {}
        for lane in self._lanes:
            counts = Counter(lane.applier.counts)
            if lane.released:
                counts["released"] += lane.released
            by_queue[lane.name] = counts
        return by_queue

    @property
    def receives(self) -> int:
        """Receive requests completed so far, over every queue."""
        return sum(lane.receives for lane in self._lanes)

    def health(self) -> WorkerHealth:
        """Whether the worker can still take work (see :mod:`cloudjobs.runtimes.health`)."""
        lanes = self._lanes
        now = time.monotonic()
        return assess(
            now=now,
            concurrency=self.concurrency,
            overdue_handlers=sum(lane.heartbeat.overdue for lane in lanes),
            polled_at={lane.queue: lane.polled_at for lane in lanes},
            heartbeat_at=min((lane.heartbeat.last_tick for lane in lanes), default=now),
            stall_timeout=self.stall_timeout,
            is_receiving=not self._stopping.is_set(),
        )

    def stop(self) -> None:
        """Ask the worker to shut down gracefully; safe from any thread (not from a signal handler:
        it sets events, whose locks the interrupted main thread may hold; SIGTERM and SIGINT reach
        it through :func:`~cloudjobs.runtimes.signals.install_stop_signals`'s thread).

        From this call on no job starts: a handler thread that takes a message meanwhile releases it
        unrun, before the shutdown (on the thread that called :meth:`run`) closes the dispatcher.
        """
        self._stopping.set()
        self._stop_requested.set()

    def _force(self, received: signal.Signals) -> None:
        # Called in the signal handler: it takes no lock (the events are the first signal's stop()).
        # The shutdown's wait for running jobs checks this (a second signal ends it).
        self._forced_by = received

    def run(self) -> ShutdownReport:
        """Consume until :meth:`stop` or SIGTERM/SIGINT, then shut down gracefully and return.

        When no logging is configured at all, cloudjobs' own logs go to stderr as text at INFO (see
        :func:`cloudjobs.logs.install_default_logging`).

        Returns:
            What the shutdown released and left running, and whether a second signal forced it.

        Raises:
            ConfigurationError: a setting contradicts a queue, a queue has no dead-letter queue, or
                the health port cannot be bound (checked before anything runs).
            BackendError: a queue cannot be reached or does not exist (at start-up).
        """
        from cloudjobs.logs import install_default_logging

        install_default_logging()
        dispatcher: Dispatcher[Lane] = Dispatcher(self.plan.policy())
        self._lanes = lanes = [self._open_lane(name, dispatcher) for name in self.plan.names]
        self._watch = HealthWatch([lane.queue for lane in lanes])
        if self._health_port is not None:
            from cloudjobs.runtimes.health_server import HealthServer

            self.health_server = HealthServer(
                self.health, port=self._health_port, address=self._health_address
            )
        restore = install_stop_signals(self.stop, self._force)
        threads = [
            threading.Thread(
                target=self._handle_loop, args=(dispatcher,), name=f"cloudjobs-handler-{index}", daemon=True
            )
            for index in range(self.concurrency)
        ]
        metrics_interval = self.queue_metrics_interval if self._app.telemetry.is_enabled else None
        for thread in threads:
            thread.start()
        for lane in lanes:
            lane.start(metrics_interval)
        self._log_start(lanes)
        if self.health_server is not None:
            self.health_server.start()
        self.started.set()
        try:
            self._stop_requested.wait()
        finally:
            for lane in lanes:
                lane.stop_reading_metrics()
            try:
                report = self._shutdown(dispatcher, lanes)
            finally:
                if self.health_server is not None:
                    self.health_server.close()
                restore()
        return report

    def _open_lane(self, name: str, dispatcher: Dispatcher[Lane]) -> Lane:
        cap = self.plan.cap_of(name, self.concurrency)
        return open_lane(
            self._app,
            name,
            dispatcher=dispatcher,
            cap=cap,
            # A queue holds what its slots can start soon: a capped queue cannot hog the prefetch.
            limit=cap + self.prefetch,
            loop=self._loop,
            stopping=self._stopping,
            on_tick=self._observe_health,
        )

    def _log_start(self, lanes: list[Lane]) -> None:
        for lane in lanes:
            logger.info(
                "worker started on queue %s: concurrency %d, prefetch %d, visibility %ss, heartbeat %ss",
                lane.queue,
                self.concurrency,
                self.prefetch,
                lane.visibility.total_seconds(),
                lane.interval.total_seconds(),
            )
        if len(lanes) > 1 or self.plan.caps:
            logger.info("worker queues: %s", self.plan.describe())

    def _observe_health(self) -> None:
        if self._watch is not None:
            self._watch.observe(self.health())

    # -- handling ---------------------------------------------------------------------------------

    def _handle_loop(self, dispatcher: Dispatcher[Lane]) -> None:
        while (taken := dispatcher.take()) is not None:
            slot, chain = taken
            slot.lane.handle(chain)

    # -- shutting down ----------------------------------------------------------------------------

    def _shutdown(self, dispatcher: Dispatcher[Lane], lanes: list[Lane]) -> ShutdownReport:
        logger.info("worker stopping: releasing unstarted messages, finishing running jobs")
        deadline = time.monotonic() + self.shutdown_timeout.total_seconds()
        self._stopping.set()
        # Closed first: nothing received from now on starts, and receivers release what they get.
        dispatcher.close()
        # Released at once, not when a slot frees up: another worker can start them now.
        for slot, unstarted in dispatcher.unstarted():
            for delivery in unstarted:
                slot.lane.heartbeat.release(delivery.receipt)
            slot.lane.release(unstarted)
            dispatcher.settled(slot, len(unstarted))
            logger.info(
                "released %d messages of queue %s that never started", len(unstarted), slot.lane.queue
            )
        abandoned = dispatcher.wait_settled(deadline, is_forced=lambda: self._forced_by is not None)
        forced = self._forced_by is not None
        # A long poll under way is not waited out (up to 20 s): its receiver releases what it
        # returns if this process lives on; otherwise it reappears after the visibility timeout.
        if not forced:
            grace = time.monotonic() + max(0.0, min(_RECEIVER_GRACE, deadline - time.monotonic()))
            for lane in lanes:
                lane.join_receiver(max(0.0, grace - time.monotonic()))
        for lane in lanes:
            lane.close(heartbeat_timeout=_FORCED_WAIT if forced else None)
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
        released = sum(lane.released for lane in lanes)
        return ShutdownReport(released=released, abandoned=abandoned, forced_by=self._forced_by)

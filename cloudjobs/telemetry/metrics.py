"""Metrics through the OpenTelemetry metrics API: job counters and histograms, queue gauges.

Instruments are created on the global meter provider's ``cloudjobs`` meter. Without an SDK they are
no-ops; once an SDK provider is installed (even after these were created) they report to it.

======================================= ============== ==============================================
instrument                              kind, unit     meaning (attributes)
======================================= ============== ==============================================
``cloudjobs.jobs.enqueued``             counter        jobs sent (job type, queue)
``cloudjobs.jobs.succeeded``            counter        handler runs that returned
``cloudjobs.jobs.failed``               counter        handler runs that raised (+ ``error.type``)
``cloudjobs.jobs.retried``              counter        failed attempts that will run again
``cloudjobs.jobs.dead_lettered``        counter        jobs sent to the dead-letter queue (+ reason)
``cloudjobs.job.duration``              histogram, s   handler run time
``cloudjobs.job.queue_lag``             histogram, s   first enqueue → start of the first attempt
``cloudjobs.jobs.in_flight``            up-down        handlers running now in this process
``cloudjobs.queue.depth``               gauge          visible messages (ApproximateNumberOfMessages)
``cloudjobs.queue.in_flight``           gauge          received, not yet deleted (…NotVisible)
``cloudjobs.queue.delayed``             gauge          delayed messages (…Delayed)
``cloudjobs.queue.dlq_depth``           gauge          messages in the dead-letter queue
``cloudjobs.worker.stalled``            gauge          1 while a worker is stalled, else 0 (+ stall)
``cloudjobs.schedule.fired``            counter        ticks whose job a scheduler enqueued
``cloudjobs.schedule.skipped_overlap``  counter        ticks skipped: the previous run still going
``cloudjobs.schedule.missed``           counter        ticks later than the misfire grace, not fired
``cloudjobs.schedule.lateness``         histogram, s   a fired tick's time → its enqueue
``cloudjobs.limit.deferred``            counter        jobs deferred by a limit (job type, limit kind)
======================================= ============== ==============================================

Job metrics carry ``cloudjobs.job.type`` and ``messaging.destination.name``; queue gauges carry
``messaging.destination.name`` (the source queue's name, also for the DLQ depth). The stall gauge
carries ``messaging.destination.name`` and ``cloudjobs.worker.stall`` (``handlers_overdue``,
``receiver_stalled``, ``heartbeat_stalled``; see :mod:`cloudjobs.runtimes.health`). Schedule
metrics carry ``cloudjobs.schedule.name`` (see :mod:`cloudjobs.scheduling.scheduler`); each tick is
counted once, by the scheduler that claimed it, however many schedulers run. The limit counter
carries ``cloudjobs.job.type`` and ``cloudjobs.limit.kind`` (``rate``, ``concurrency``, or
``unavailable`` when the limits' store could not be reached; see :mod:`cloudjobs.limits`).
"""

from __future__ import annotations

import functools
import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from cloudjobs.backends.base import QueueStatistics
from cloudjobs.telemetry.providers import is_metering

if TYPE_CHECKING:
    from opentelemetry import metrics

logger = logging.getLogger("cloudjobs.telemetry")

METER_NAME: Final = "cloudjobs"
JOB_TYPE_KEY: Final = "cloudjobs.job.type"
DESTINATION_KEY: Final = "messaging.destination.name"
ERROR_TYPE_KEY: Final = "error.type"
REASON_KEY: Final = "cloudjobs.dead_letter.reason"
STALL_KEY: Final = "cloudjobs.worker.stall"
SCHEDULE_KEY: Final = "cloudjobs.schedule.name"
LIMIT_KIND_KEY: Final = "cloudjobs.limit.kind"

DEFAULT_QUEUE_METRICS_INTERVAL: Final = timedelta(seconds=60)
"""How often the worker reads the queue's counts for its gauges (CloudWatch's own period)."""

_SECONDS_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class JobMetrics:
    """The job instruments (see the module docstring)."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.enqueued = meter.create_counter("cloudjobs.jobs.enqueued", "{job}", "Jobs sent to the queue.")
        self.succeeded = meter.create_counter(
            "cloudjobs.jobs.succeeded", "{job}", "Handler runs that returned."
        )
        self.failed = meter.create_counter("cloudjobs.jobs.failed", "{job}", "Handler runs that raised.")
        self.retried = meter.create_counter(
            "cloudjobs.jobs.retried", "{job}", "Failed attempts that will be retried."
        )
        self.dead_lettered = meter.create_counter(
            "cloudjobs.jobs.dead_lettered", "{job}", "Jobs sent to the dead-letter queue."
        )
        self.duration = meter.create_histogram(
            "cloudjobs.job.duration",
            "s",
            "Handler run time.",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self.queue_lag = meter.create_histogram(
            "cloudjobs.job.queue_lag",
            "s",
            "Time from a job's enqueue to the start of its first attempt.",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self.in_flight = meter.create_up_down_counter(
            "cloudjobs.jobs.in_flight", "{job}", "Handlers running now in this process."
        )


class QueueGauges:
    """The queue gauges, set by :class:`QueueMetricsReader`."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.depth = meter.create_gauge("cloudjobs.queue.depth", "{message}", "Visible messages.")
        self.in_flight = meter.create_gauge(
            "cloudjobs.queue.in_flight", "{message}", "Messages received and not yet deleted."
        )
        self.delayed = meter.create_gauge("cloudjobs.queue.delayed", "{message}", "Delayed messages.")
        self.dlq_depth = meter.create_gauge(
            "cloudjobs.queue.dlq_depth", "{message}", "Messages in the dead-letter queue."
        )


class WorkerGauges:
    """The worker's own gauges, set by :class:`~cloudjobs.runtimes.health.HealthWatch`."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.stalled = meter.create_gauge(
            "cloudjobs.worker.stalled", "1", "1 while the worker cannot take work for this reason, else 0."
        )


class SchedulerMetrics:
    """The scheduler's instruments (see the module docstring)."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.fired = meter.create_counter(
            "cloudjobs.schedule.fired", "{tick}", "Ticks whose job a scheduler enqueued."
        )
        self.skipped_overlap = meter.create_counter(
            "cloudjobs.schedule.skipped_overlap",
            "{tick}",
            "Ticks skipped because the previous run of their schedule was still pending or running.",
        )
        self.missed = meter.create_counter(
            "cloudjobs.schedule.missed", "{tick}", "Ticks later than their misfire grace, not fired."
        )
        self.lateness = meter.create_histogram(
            "cloudjobs.schedule.lateness",
            "s",
            "Time from a tick to the enqueue of its job.",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )


class LimitMetrics:
    """The limits' instruments (see the module docstring)."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.deferred = meter.create_counter(
            "cloudjobs.limit.deferred", "{job}", "Jobs deferred by a rate or concurrency limit."
        )


def _meter() -> metrics.Meter:
    # Imported here: the API loads only once something is measured (see telemetry.providers).
    from opentelemetry import metrics

    return metrics.get_meter(METER_NAME)


@functools.cache
def job_metrics() -> JobMetrics:
    """The process's job instruments (created on first use, on the global meter provider)."""
    return JobMetrics(_meter())


@functools.cache
def queue_gauges() -> QueueGauges:
    """The process's queue gauges (created on first use, on the global meter provider)."""
    return QueueGauges(_meter())


@functools.cache
def scheduler_metrics() -> SchedulerMetrics:
    """The process's scheduler instruments (created on first use, on the global meter provider)."""
    return SchedulerMetrics(_meter())


@functools.cache
def limit_metrics() -> LimitMetrics:
    """The process's limit instruments (created on first use, on the global meter provider)."""
    return LimitMetrics(_meter())


@functools.cache
def worker_gauges() -> WorkerGauges:
    """The process's worker gauges (created on first use, on the global meter provider)."""
    return WorkerGauges(_meter())


class QueueMetricsReader:
    """Reads a queue's approximate counts every ``interval`` on its own thread and sets the gauges.

    One GetQueueAttributes per queue per interval, whatever the message rate: never per message.
    While no SDK stands behind the global meter provider (see :mod:`cloudjobs.telemetry.providers`)
    the gauges would record nothing, so nothing is read (nor the metrics API loaded) and no thread
    runs: ``start`` starts the thread only when an SDK is installed, else the first ``poke`` after
    one is (a worker pokes on its heartbeat); a thread that is running and finds the SDK gone skips
    its reads. A failed read is logged and retried at the next interval.

    Args:
        statistics: where the counts come from (a backend implementing ``QueueStatistics``).
        queue: the queue's name (the gauges' ``messaging.destination.name``).
        interval: time between reads.
        gauges: the instruments to set (default: the process's).
    """

    def __init__(
        self,
        statistics: QueueStatistics,
        *,
        queue: str,
        interval: timedelta,
        gauges: QueueGauges | None = None,
    ) -> None:
        if interval <= timedelta(0):
            raise ValueError("the interval between queue reads must be positive")
        self._statistics = statistics
        self._attributes = {DESTINATION_KEY: queue}
        self._interval = interval.total_seconds()
        self._gauges = gauges
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cloudjobs-queue-metrics", daemon=True)
        self._lock = threading.Lock()
        self._is_wanted = False
        self.reads = 0

    @property
    def is_reading(self) -> bool:
        """True once the reading thread has started (and until it stops)."""
        return self._thread.is_alive()

    def start(self) -> None:
        """Start reading, the first read at once; without an SDK, at the first ``poke`` after one is
        installed."""
        self._is_wanted = True
        self.poke()

    def poke(self) -> None:
        """Start the reading thread if ``start`` asked for it and an SDK is now installed. Cheap:
        call it as often as is convenient."""
        if not self._is_wanted or self._thread.ident is not None or not is_metering():
            return
        with self._lock:
            if self._thread.ident is None and not self._stopped.is_set():
                self._thread.start()

    def stop(self) -> None:
        """Stop reading; waits up to 5 s for a read under way (the thread is a daemon)."""
        with self._lock:
            self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def read_once(self) -> None:
        """Read the counts now and set the gauges.

        Raises:
            CloudjobsError: the queue could not be read.
        """
        counts = self._statistics.message_counts()
        if self._gauges is None:
            self._gauges = queue_gauges()
        self._gauges.depth.set(counts.visible, self._attributes)
        self._gauges.in_flight.set(counts.in_flight, self._attributes)
        self._gauges.delayed.set(counts.delayed, self._attributes)
        dead_letters = self._statistics.dead_letter_message_counts()
        if dead_letters is not None:
            self._gauges.dlq_depth.set(dead_letters.total, self._attributes)
        self.reads += 1

    def _run(self) -> None:
        while not self._stopped.is_set():
            self.tick()
            self._stopped.wait(self._interval)

    def tick(self) -> None:
        """One interval's work: read the counts when an SDK would record them; never raises."""
        if not is_metering():
            return
        try:
            self.read_once()
        except Exception:
            # Metrics must never take the worker down; the next interval tries again.
            logger.warning("reading queue counts for metrics failed", exc_info=True)

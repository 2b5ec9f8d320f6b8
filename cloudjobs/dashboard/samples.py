"""The overview's chart: queue depths sampled by the dashboard itself.

A thread reads every queue's depths (``jobs.stats_all()``: two GetQueueAttributes per queue) every
``interval`` (30 s by default) and keeps the last hour in memory. The chart draws, per queue, the
messages waiting (visible plus in flight) and the dead-letter queue's depth, and the jobs
dead-lettered per minute, counted as the DLQ's growth between samples (a redrive or purge shrinks it
and counts nothing). Completions per minute are not known to the dashboard: the workers export them
(``cloudjobs.jobs.completed`` on ``--metrics-port``). Samples start when the dashboard starts; a
restarted dashboard's chart starts empty.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from cloudjobs.app import CloudJobs

logger = logging.getLogger("cloudjobs.dashboard")

DEFAULT_INTERVAL: Final = timedelta(seconds=30)
KEEP: Final = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Sample:
    """One queue's depths at one time."""

    at: datetime
    waiting: int
    dlq_depth: int | None


class DepthSamples:
    """Samples of every queue's depths over the last hour (see the module docstring)."""

    def __init__(self, jobs: CloudJobs, *, interval: timedelta = DEFAULT_INTERVAL) -> None:
        self._jobs = jobs
        self.interval = interval
        self._samples: dict[str, deque[Sample]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Sample now, then every ``interval`` in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cloudjobs-dashboard-samples", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (waits for a sample under way)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def take(self) -> None:
        """Sample every queue once (errors are logged: a missed sample is a gap)."""
        now = self._jobs.clock.now()
        try:
            stats = self._jobs.stats_all()
        except Exception:
            logger.warning("sampling queue depths failed", exc_info=True)
            return
        with self._lock:
            for name, queue in stats.items():
                series = self._samples.setdefault(name, deque())
                series.append(Sample(now, queue.visible + queue.in_flight, queue.dlq_depth))
                while series and now - series[0].at > KEEP:
                    series.popleft()

    def of(self, queue: str) -> list[Sample]:
        """A queue's samples, oldest first."""
        with self._lock:
            return list(self._samples.get(queue, ()))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.take()
            self._stop.wait(self.interval.total_seconds())


def dead_lettered_per_minute(samples: list[Sample]) -> list[tuple[datetime, int]]:
    """Jobs dead-lettered per minute: the DLQ's growth between samples, summed by minute."""
    minutes: dict[datetime, int] = {}
    for before, after in itertools.pairwise(samples):
        if before.dlq_depth is None or after.dlq_depth is None:
            continue
        minute = after.at.replace(second=0, microsecond=0)
        minutes[minute] = minutes.get(minute, 0) + max(0, after.dlq_depth - before.dlq_depth)
    return sorted(minutes.items())

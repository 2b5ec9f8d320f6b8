"""The worker's health: is it still able to take work? Said in a log, a metric and over HTTP.

A worker stalls silently in two ways: every concurrency slot is held by a sync handler past its
timeout (Python threads cannot be killed, so those slots stay taken until the functions return), or
a receive loop stops completing polls (the queue is unreachable, credentials expired, a call
hangs; a worker on several queues has one per queue, and each is watched). :func:`assess` turns
what the worker knows into a :class:`WorkerHealth`; :class:`HealthWatch` logs and meters each
change; :class:`~cloudjobs.runtimes.health_server.HealthServer` answers ``GET /healthz`` with 200 or
503 for ECS container health checks and Kubernetes probes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Final

from cloudjobs.telemetry.metrics import DESTINATION_KEY, STALL_KEY, worker_gauges
from cloudjobs.telemetry.providers import is_metering

logger = logging.getLogger("cloudjobs.worker")

DEFAULT_HEALTH_ADDRESS: Final = "127.0.0.1"
"""Where the health endpoint listens by default: reachable by a container's own health command."""
HEALTH_PATH: Final = "/healthz"


class Stall(Enum):
    """Why a worker cannot take work."""

    HANDLERS_OVERDUE = "handlers_overdue"
    """Every concurrency slot is held by a sync handler running past its timeout."""
    RECEIVER_STALLED = "receiver_stalled"
    """A queue's receive loop has not completed a poll within the stall timeout (and was not waiting
    for free slots)."""
    HEARTBEAT_STALLED = "heartbeat_stalled"
    """The heartbeat (visibility extensions, deadlines, deletes) has not run within the stall timeout."""


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """A snapshot of a worker's health.

    Attributes:
        stalls: what keeps it from taking work (empty when healthy).
        overdue_handlers: handler threads running past their timeout.
        concurrency: the worker's slots.
        seconds_since_poll: since the receive loop that is furthest behind last completed a poll
            (or waited for free slots).
        stalled_queues: the queues whose receive loop stalled, in the worker's order.
    """

    stalls: frozenset[Stall]
    overdue_handlers: int
    concurrency: int
    seconds_since_poll: float
    stalled_queues: tuple[str, ...] = ()

    @property
    def is_healthy(self) -> bool:
        """True when nothing stalls the worker."""
        return not self.stalls

    def describe(self) -> str:
        """One line for a log: what stalls the worker."""
        parts = []
        if Stall.HANDLERS_OVERDUE in self.stalls:
            parts.append(
                f"all {self.concurrency} slots are held by handlers past their timeout "
                "(their threads cannot be stopped; they keep the slots until they return)"
            )
        if Stall.RECEIVER_STALLED in self.stalls:
            queues = ", ".join(self.stalled_queues) or "the queue"
            parts.append(f"no poll of {queues} completed for {self.seconds_since_poll:.0f}s")
        if Stall.HEARTBEAT_STALLED in self.stalls:
            parts.append("the heartbeat has stopped running")
        return "; ".join(parts) or "healthy"

    def as_json(self) -> dict[str, object]:
        """The snapshot as the health endpoint's JSON body."""
        return {
            "status": "ok" if self.is_healthy else "stalled",
            "stalls": sorted(stall.value for stall in self.stalls),
            "overdue_handlers": self.overdue_handlers,
            "concurrency": self.concurrency,
            "seconds_since_poll": round(self.seconds_since_poll, 3),
            "stalled_queues": list(self.stalled_queues),
        }


def assess(
    *,
    now: float,
    concurrency: int,
    overdue_handlers: int,
    polled_at: Mapping[str, float],
    heartbeat_at: float,
    stall_timeout: timedelta,
    is_receiving: bool,
) -> WorkerHealth:
    """Judge a worker's health from what it knows (all times from ``time.monotonic()``).

    Args:
        now: the current time.
        concurrency: the worker's slots.
        overdue_handlers: handler threads running past their timeout.
        polled_at: by queue, when its receive loop last completed a poll or found no room to poll.
        heartbeat_at: when the heartbeat that is furthest behind last woke up.
        stall_timeout: how long either may go without progress.
        is_receiving: False while the worker stops (no polls are expected then).
    """
    limit = stall_timeout.total_seconds()
    stalls: set[Stall] = set()
    if overdue_handlers >= concurrency:
        stalls.add(Stall.HANDLERS_OVERDUE)
    stalled_queues = tuple(name for name, at in polled_at.items() if now - at > limit) if is_receiving else ()
    if stalled_queues:
        stalls.add(Stall.RECEIVER_STALLED)
    if now - heartbeat_at > limit:
        stalls.add(Stall.HEARTBEAT_STALLED)
    return WorkerHealth(
        stalls=frozenset(stalls),
        overdue_handlers=overdue_handlers,
        concurrency=concurrency,
        seconds_since_poll=max(0.0, now - min(polled_at.values(), default=now)),
        stalled_queues=stalled_queues,
    )


class HealthWatch:
    """Logs and meters each change of a worker's health (call :meth:`observe` often, cheaply).

    A stall is logged once at ERROR when it begins, and the recovery at INFO; the gauge
    ``cloudjobs.worker.stalled`` is 1 for each stall under way and 0 for the others, per queue (a
    receiver stall on the queues whose receive loop stalled, the others on every queue). Thread-safe.

    Args:
        queues: the worker's queues (the SQS names: the gauge's ``messaging.destination.name``).
    """

    def __init__(self, queues: Sequence[str]) -> None:
        self._queues = tuple(queues)
        self._lock = threading.Lock()
        self._last: tuple[frozenset[Stall], tuple[str, ...]] | None = None
        self._is_metered = False

    def observe(self, health: WorkerHealth) -> None:
        """Log and meter ``health`` if it differs from the last one observed (the gauges are set
        only while an SDK would record them, and again when one is installed)."""
        current = (health.stalls, health.stalled_queues)
        is_metered = is_metering()
        with self._lock:
            if current == self._last and is_metered == self._is_metered:
                return
            previous, self._last, self._is_metered = self._last, current, is_metered
        if is_metered:
            self._meter(health)
        if current == previous:
            return
        if health.stalls:
            logger.error("worker stalled: %s", health.describe())
        elif previous is not None and previous[0]:
            logger.info("worker recovered: it can take work again")

    def _meter(self, health: WorkerHealth) -> None:
        gauge = worker_gauges().stalled
        for queue in self._queues:
            for stall in Stall:
                is_stalled = stall in health.stalls and (
                    stall is not Stall.RECEIVER_STALLED or queue in health.stalled_queues
                )
                gauge.set(int(is_stalled), {DESTINATION_KEY: queue, STALL_KEY: stall.value})

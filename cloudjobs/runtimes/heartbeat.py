"""The heartbeat registry: keeps held messages invisible while their jobs run.

Every delivery a worker holds is registered here from receive to settle. A monitor thread extends
the visibility of the ones about to reappear, ten per ChangeMessageVisibilityBatch, and fires job
deadlines (sync handlers cannot be interrupted, so their timeout is decided here). SQS caps a
received message's total visibility at 12 hours: past that the heartbeat stops extending it.

Leases (the idempotency store's) are kept from the same registry, on the same beat: each is renewed
once an interval has passed since it was taken or last renewed. A lease outlives its message's
visibility when a sync handler passes its timeout: its thread keeps the lease until it ends.

The heartbeat also counts the deadlines that fired and were not yet cancelled (:attr:`overdue`: sync
handlers still running past their timeout) and when its monitor last woke up (:attr:`last_tick`),
for the worker's health check.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from cloudjobs.backends.base import MAX_BATCH_ENTRIES, MAX_VISIBILITY, Backend, Delivery
from cloudjobs.errors import CloudjobsError

logger = logging.getLogger("cloudjobs.worker")

_COMPACT_AFTER = 64
"""Cancelled deadlines the heap may hold before it is compacted (when they are most of it)."""


@dataclass(slots=True)
class _Held:
    delivery: Delivery
    received_at: float
    visible_until: float
    is_capped: bool = False


@dataclass(slots=True)
class _Lease:
    renew: Callable[[], None]
    renewed_at: float


@dataclass(order=True, slots=True)
class _Deadline:
    at: float
    sequence: int
    action: Callable[[], None] | None = field(compare=False)
    """None once cancelled: a cancelled deadline lets go of its run at once, not when it falls due."""
    has_fired: bool = field(default=False, compare=False)


class Heartbeat:
    """Extends held messages' visibility and fires deadlines, from one monitor thread.

    Args:
        backend: where visibility changes go.
        visibility: the visibility each extension sets, counted from now.
        interval: how often held messages are checked (well inside ``visibility``).
        on_tick: called on every wake-up of the monitor (the worker flushes deletes there).
        tick: the longest the monitor sleeps between wake-ups.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        visibility: timedelta,
        interval: timedelta,
        on_tick: Callable[[], None] = lambda: None,
        tick: timedelta = timedelta(milliseconds=500),
    ) -> None:
        self._backend = backend
        self._visibility = visibility.total_seconds()
        self._interval = interval.total_seconds()
        self._on_tick = on_tick
        self._tick = min(tick.total_seconds(), self._interval)
        self._held: dict[str, _Held] = {}
        self._leases: dict[str, _Lease] = {}
        self._deadlines: list[_Deadline] = []
        self._cancelled = 0
        """Cancelled deadlines still in the heap (removed when due, or all at once when they are
        most of it)."""
        self._sequence = itertools.count()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="cloudjobs-heartbeat", daemon=True)
        self._overdue = 0
        self._last_tick = time.monotonic()
        self.extensions = 0

    def start(self) -> None:
        """Start the monitor thread."""
        self._thread.start()

    def stop(self, *, timeout: float | None = None) -> None:
        """Stop the monitor thread (held messages are no longer extended).

        Args:
            timeout: the longest to wait for a beat under way, in seconds (None: as long as it takes).
        """
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        self._thread.join(timeout)

    def hold(self, deliveries: list[Delivery]) -> None:
        """Start extending these deliveries' visibility."""
        now = time.monotonic()
        with self._wake:
            for delivery in deliveries:
                self._held[delivery.receipt] = _Held(delivery, now, now + self._visibility)

    def release(self, receipt: str) -> None:
        """Stop extending a delivery's visibility (it was settled, or its attempt timed out)."""
        with self._wake:
            self._held.pop(receipt, None)

    def keep_lease(self, receipt: str, renew: Callable[[], None]) -> None:
        """Call ``renew`` every interval (on the monitor thread) until :meth:`drop_lease`."""
        with self._wake:
            self._leases[receipt] = _Lease(renew, time.monotonic())

    def drop_lease(self, receipt: str) -> None:
        """Stop renewing the lease kept for ``receipt``."""
        with self._wake:
            self._leases.pop(receipt, None)

    @property
    def held(self) -> int:
        """How many deliveries are held."""
        with self._wake:
            return len(self._held)

    @property
    def overdue(self) -> int:
        """Deadlines that fired and whose caller has not cancelled them yet.

        A sync handler cancels its deadline when it returns: this is how many handler threads are
        still running past their timeout, each holding a concurrency slot.
        """
        with self._wake:
            return self._overdue

    @property
    def last_tick(self) -> float:
        """When the monitor thread last woke up (``time.monotonic()``); it wakes at least every tick."""
        with self._wake:
            return self._last_tick

    def call_at(self, delay: timedelta, action: Callable[[], None]) -> Callable[[], None]:
        """Run ``action`` on the monitor thread after ``delay``; returns a function that cancels it."""
        deadline = _Deadline(time.monotonic() + delay.total_seconds(), next(self._sequence), action)
        with self._wake:
            heapq.heappush(self._deadlines, deadline)
            if self._deadlines[0] is deadline:
                self._wake.notify_all()

        def cancel() -> None:
            with self._wake:
                if deadline.action is None:
                    return
                deadline.action = None
                if deadline.has_fired:
                    self._overdue -= 1
                    return
                self._cancelled += 1
                if self._cancelled > _COMPACT_AFTER and 2 * self._cancelled > len(self._deadlines):
                    # Most of the heap is cancelled (every job that ends in time cancels its
                    # deadline): rebuild it from the live ones, in linear time.
                    self._deadlines = [d for d in self._deadlines if d.action is not None]
                    heapq.heapify(self._deadlines)
                    self._cancelled = 0

        return cancel

    def _run(self) -> None:
        next_beat = time.monotonic() + self._interval
        while True:
            with self._wake:
                if self._stopped:
                    return
                now = self._last_tick = time.monotonic()
                due = self._pop_due(now)
                sleep = min(next_beat, self._deadlines[0].at if self._deadlines else next_beat) - now
                if not due and sleep > 0:
                    self._wake.wait(min(sleep, self._tick))
                    now = self._last_tick = time.monotonic()
                for _, deadline in due:
                    # Counted before the action runs: its caller is past its deadline from now on.
                    deadline.has_fired = True
                    self._overdue += 1
            for action, _ in due:
                _run_safely(action)
            if now >= next_beat:
                self._beat(now)
                next_beat = now + self._interval
            _run_safely(self._on_tick)

    def _pop_due(self, now: float) -> list[tuple[Callable[[], None], _Deadline]]:
        """Take the deadlines due by ``now`` off the heap: the live ones with their actions."""
        due: list[tuple[Callable[[], None], _Deadline]] = []
        while self._deadlines and self._deadlines[0].at <= now:
            deadline = heapq.heappop(self._deadlines)
            if deadline.action is None:
                self._cancelled -= 1
            else:
                due.append((deadline.action, deadline))
        return due

    def _beat(self, now: float) -> None:
        self._renew_leases(now)
        changes: list[tuple[str, timedelta]] = []
        with self._wake:
            for receipt, held in self._held.items():
                if held.is_capped or held.visible_until - now > 2 * self._interval:
                    continue
                remaining_cap = held.received_at + MAX_VISIBILITY.total_seconds() - now
                extension = min(self._visibility, remaining_cap)
                if extension < self._visibility:
                    held.is_capped = True
                    logger.warning(
                        "message %s reaches SQS's 12-hour visibility cap; it is extended no further",
                        held.delivery.message_id,
                    )
                held.visible_until = now + extension
                changes.append((receipt, timedelta(seconds=int(extension))))
        for start in range(0, len(changes), MAX_BATCH_ENTRIES):
            batch = changes[start : start + MAX_BATCH_ENTRIES]
            try:
                gone = self._backend.change_visibility(batch)
            except CloudjobsError:
                logger.exception("extending visibility of %d messages failed", len(batch))
                continue
            self.extensions += len(batch) - len(gone)
            for receipt in gone:
                self.release(receipt)

    def _renew_leases(self, now: float) -> None:
        with self._wake:
            due = [lease for lease in self._leases.values() if now - lease.renewed_at >= self._interval]
            for lease in due:
                lease.renewed_at = now
        for lease in due:
            _run_safely(lease.renew)


def _run_safely(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception:
        logger.exception("heartbeat task failed")

"""When a lane's extra receivers may poll beside its first one.

Over a network a receive is mostly waiting: one poll at a time caps a lane at ten messages per round
trip, and a second poll under way doubles that for the price of a thread that mostly sleeps. On a
machine whose CPUs are busy (a local server sharing them with the worker, say), a second poll only
adds load. :class:`OverlapTrigger` decides between the two from what it is told of each receive,
and its rule cannot be fooled by CPU contention, which makes a round trip look slow:

* the lane's receives come back full (what the second poll would bring is a full batch, not a
  half-empty one that would only add requests);
* a receive waited on the network: its wall time minus the CPU the whole *process* used meanwhile
  (every thread's, from :func:`time.process_time`) is long, and the process computed through less
  than three quarters of it. Time a receiving thread spends waiting for the GIL is time another
  thread of the process computes, so it does not count as waiting;
* the machine has idle CPU (Linux: the aggregate ``cpu`` line of ``/proc/stat``, read at most every
  half second): a round trip that waited for a CPU, not for the network, leaves none. Where
  ``/proc/stat`` cannot be read, the first two rules decide alone.

Thresholds differ for turning on and off (hysteresis): the extra polls start after
:data:`START_AFTER` receives in a row meet the stricter thresholds, and stop at the first partial
batch, or once the looser ones fail.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

PROC_STAT: Final = "/proc/stat"
SAMPLE_EVERY: Final = 0.5
"""Seconds between two reads of ``/proc/stat`` (the idle share is over the time between them)."""
START_WAIT: Final = 0.004
"""Seconds a receive must wait beside its process's CPU for the extra polls to start..."""
STOP_WAIT: Final = 0.002
"""...and below which they stop."""
START_BUSY: Final = 0.75
"""Share of a receive's wall time the process may compute for the extra polls to start..."""
STOP_BUSY: Final = 0.9
"""...and above which they stop (the process, not the network, is then what receives wait for)."""
START_IDLE: Final = 0.35
"""Share of the machine's CPU time idle over the last sample for the extra polls to start..."""
STOP_IDLE: Final = 0.2
"""...and below which they stop."""
START_AFTER: Final = 2
"""Receives in a row that must meet the starting thresholds."""


def read_proc_stat(path: str = PROC_STAT) -> tuple[int, int] | None:
    """The machine's idle (idle + iowait) and total CPU ticks since boot, from the aggregate ``cpu``
    line of ``/proc/stat``; None where it cannot be read."""
    try:
        with open(path, "rb") as stat:
            line = stat.readline()
    except OSError:
        return None
    fields = line.split()
    if len(fields) < 5 or fields[0] != b"cpu":
        return None
    try:
        ticks = [int(field) for field in fields[1:]]
    except ValueError:
        return None
    # user nice system idle iowait irq softirq steal guest guest_nice: guest time is in user's.
    total = sum(ticks[:8])
    return ticks[3] + (ticks[4] if len(ticks) > 4 else 0), total


class IdleCpu:
    """The share of the machine's CPU time that was idle, sampled at most every ``every`` seconds.

    Args:
        read: (idle, total) ticks since boot, or None where unknown (:func:`read_proc_stat`).
        clock: monotonic seconds.
        every: seconds between two reads.
    """

    def __init__(
        self,
        read: Callable[[], tuple[int, int] | None] = read_proc_stat,
        clock: Callable[[], float] = time.monotonic,
        every: float = SAMPLE_EVERY,
    ) -> None:
        self._read = read
        self._clock = clock
        self._every = every
        self._lock = threading.Lock()
        self._sample = read()
        self._sampled_at = clock()
        self._share: float | None = None
        self.available = self._sample is not None
        """Whether the machine's CPU times can be read at all."""

    def share(self) -> float | None:
        """The idle share between the last two reads (reading again if the last is ``every`` seconds
        old); None before two reads, or where the times cannot be read."""
        if not self.available:
            return None
        now = self._clock()
        with self._lock:
            if now - self._sampled_at < self._every:
                return self._share
            sample = self._read()
            if sample is None:
                self.available = False
                self._share = None
                return None
            previous, self._sample, self._sampled_at = self._sample, sample, now
            if previous is not None and sample[1] > previous[1]:
                self._share = max(0.0, min(1.0, (sample[0] - previous[0]) / (sample[1] - previous[1])))
            return self._share


class OverlapTrigger:
    """Whether a lane's extra receivers may poll now (see the module docstring). Thread-safe.

    Args:
        batch: messages a full receive brings.
        idle: the machine's idle CPU share.
        cpu: the process's CPU seconds (every thread's).
        clock: seconds, for receives' wall time.
    """

    def __init__(
        self,
        batch: int,
        *,
        idle: IdleCpu | None = None,
        cpu: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._batch = batch
        self._idle = IdleCpu() if idle is None else idle
        self._cpu = cpu
        self._clock = clock
        self._lock = threading.Lock()
        self._streak = 0
        self.on = threading.Event()
        """Set while extra receivers may poll."""

    def started(self) -> tuple[float, float]:
        """Note a receive's start: pass what this returns to :meth:`finished`."""
        return self._clock(), self._cpu()

    def finished(self, start: tuple[float, float], received: int, *, asked: int | None = None) -> None:
        """A receive begun at ``start`` (:meth:`started`) brought ``received`` messages of the
        ``asked`` (a full batch unless told)."""
        wall = self._clock() - start[0]
        cpu = self._cpu() - start[1]
        self.observe(waited=wall - cpu, cpu=cpu, full=received >= (self._batch if asked is None else asked))

    def observe(self, *, waited: float, cpu: float, full: bool) -> None:
        """A receive that waited ``waited`` seconds beside ``cpu`` seconds of its process's CPU, and
        came back ``full`` or not."""
        idle = self._idle.share()
        with self._lock:
            if not full:
                self._stop()
                return
            wall = waited + cpu
            if self.on.is_set():
                if waited < STOP_WAIT or cpu > STOP_BUSY * wall or (idle is not None and idle < STOP_IDLE):
                    self._stop()
                return
            if waited >= START_WAIT and cpu <= START_BUSY * wall and (idle is None or idle >= START_IDLE):
                if not self._idle.available or idle is not None:
                    self._streak += 1
                    if self._streak >= START_AFTER:
                        self.on.set()
                return
            self._streak = 0

    def failed(self) -> None:
        """A receive failed: stop until receives show again that overlapping pays."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        self._streak = 0
        self.on.clear()

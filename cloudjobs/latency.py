"""When a round trip is worth overlapping with others (the producer's concurrent sends).

Measured in the calling thread: under CPU contention, time spent waiting for the GIL counts as
waiting, so a busy machine may overlap round trips that a quiet one would not (harmless for sends,
which stay correct either way)."""

from __future__ import annotations

from typing import Final

LATENCY_BOUND_WAIT: Final = 0.004
"""Seconds a round trip must wait on its answer before overlapping round trips may pay."""


def is_latency_bound(*, waited: float, cpu: float) -> bool:
    """Whether a round trip that ``waited`` seconds for its answer, beside ``cpu`` seconds of this
    thread's CPU, is worth overlapping with others: it waited at least :data:`LATENCY_BOUND_WAIT`
    and four times its CPU. Over a network (a region's 5–20 ms) it is; against a local server
    answering in a millisecond or two it is not, and overlapping would only add threads' CPU."""
    return waited >= LATENCY_BOUND_WAIT and waited >= 4 * cpu

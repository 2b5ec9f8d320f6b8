"""A small inline SVG chart of a queue's samples: no script, readable without colour (two line styles)."""

from __future__ import annotations

from dataclasses import dataclass

from cloudjobs.dashboard.samples import Sample, dead_lettered_per_minute

WIDTH = 320
HEIGHT = 80
BAR_WIDTH = 4


@dataclass(frozen=True, slots=True)
class Chart:
    """What the template draws: polyline points for waiting and DLQ depth, bars of dead letters."""

    waiting: str
    dlq: str
    bars: list[tuple[float, float, float]]
    peak: int
    has_data: bool
    dead_lettered: int


def chart_of(samples: list[Sample]) -> Chart:
    """The chart of ``samples`` (oldest first), scaled to the largest value seen."""
    if len(samples) < 2:
        return Chart("", "", [], max((s.waiting for s in samples), default=0), False, 0)
    start, end = samples[0].at, samples[-1].at
    span = max((end - start).total_seconds(), 1.0)
    per_minute = dead_lettered_per_minute(samples)
    peak = max(
        max(s.waiting for s in samples),
        max((s.dlq_depth or 0) for s in samples),
        max((count for _, count in per_minute), default=0),
        1,
    )

    def x(at_seconds: float) -> float:
        return round(at_seconds / span * WIDTH, 1)

    def y(value: int) -> float:
        return round(HEIGHT - value / peak * (HEIGHT - 4), 1)

    waiting = " ".join(f"{x((s.at - start).total_seconds())},{y(s.waiting)}" for s in samples)
    dlq = " ".join(
        f"{x((s.at - start).total_seconds())},{y(s.dlq_depth)}" for s in samples if s.dlq_depth is not None
    )
    bars = [
        (x((minute - start).total_seconds()), y(count), HEIGHT - y(count))
        for minute, count in per_minute
        if count and minute >= start
    ]
    return Chart(waiting, dlq, bars, peak, True, sum(count for _, count in per_minute))

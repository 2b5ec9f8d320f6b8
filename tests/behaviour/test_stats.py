"""jobs.stats() reports the depths of a known set of messages, on both harnesses."""

from __future__ import annotations

from datetime import timedelta

from cloudjobs.backends.base import Delivery, OutgoingMessage
from tests.behaviour.conftest import Harness, wait_for

HELD = timedelta(seconds=600)


def test_stats_report_visible_in_flight_delayed_and_dlq_depths(harness: Harness) -> None:
    jobs = harness.app()
    backend = jobs.backend
    backend.send([OutgoingMessage(body=f"visible {n}") for n in range(6)])
    backend.send([OutgoingMessage(body=f"delayed {n}", delay=timedelta(seconds=600)) for n in range(2)])
    held: list[Delivery] = []

    def receive_four() -> bool:
        held.extend(backend.receive(max_messages=4 - len(held), wait=timedelta(0), visibility=HELD))
        return len(held) >= 4

    wait_for(receive_four, message="four messages received")
    poison = held.pop()
    backend.dead_letter(poison, {})
    assert backend.delete([poison.receipt]) == []

    stats = jobs.stats()

    assert (stats.visible, stats.in_flight, stats.delayed, stats.dlq_depth) == (2, 3, 2, 1)
    assert [finding.name for finding in stats.unhealthy_findings()] == ["dlq_depth"]


def test_stats_of_a_fresh_queue_are_empty_and_healthy(harness: Harness) -> None:
    stats = harness.app().stats()

    assert (stats.visible, stats.in_flight, stats.delayed, stats.dlq_depth) == (0, 0, 0, 0)
    assert stats.is_healthy

"""The heartbeat's deadlines: fired once when due, never when cancelled, and let go of when cancelled."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from datetime import timedelta

import pytest

from cloudjobs import MemoryBackend
from cloudjobs.runtimes.heartbeat import Heartbeat


@pytest.fixture
def heartbeat() -> Iterator[Heartbeat]:
    beat = Heartbeat(
        MemoryBackend("beats"),
        visibility=timedelta(seconds=30),
        interval=timedelta(seconds=10),
        tick=timedelta(milliseconds=20),
    )
    beat.start()
    yield beat
    beat.stop(timeout=5)


class _Action:
    """A deadline's action that records its firing."""

    def __init__(self) -> None:
        self.fired = threading.Event()

    def __call__(self) -> None:
        self.fired.set()


def test_a_due_deadline_fires_and_counts_as_overdue_until_cancelled(heartbeat: Heartbeat) -> None:
    action = _Action()
    cancel = heartbeat.call_at(timedelta(milliseconds=10), action)

    assert action.fired.wait(5)
    assert heartbeat.overdue == 1
    cancel()
    assert heartbeat.overdue == 0
    cancel()  # a second cancel changes nothing
    assert heartbeat.overdue == 0


def test_cancelled_deadlines_never_fire_while_a_later_live_one_does(heartbeat: Heartbeat) -> None:
    cancelled = [_Action() for _ in range(200)]
    for action in cancelled:
        heartbeat.call_at(timedelta(milliseconds=5), action)()
    live = _Action()
    heartbeat.call_at(timedelta(milliseconds=50), live)

    assert live.fired.wait(5)
    assert not any(action.fired.is_set() for action in cancelled)
    assert heartbeat.overdue == 1


def test_a_cancelled_deadline_lets_go_of_its_action_before_it_falls_due(heartbeat: Heartbeat) -> None:
    # Every job that ends in time cancels a deadline an hour (its timeout) away: what the run holds
    # must not stay alive until then.
    actions = [_Action() for _ in range(500)]
    refs = [weakref.ref(action) for action in actions]
    for action in actions:
        heartbeat.call_at(timedelta(hours=1), action)()
    del actions, action
    gc.collect()

    assert sum(ref() is not None for ref in refs) == 0

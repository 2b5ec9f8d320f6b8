"""A job's cancel signal: a ``threading.Event`` whose condition is made only when it is first used."""

from __future__ import annotations

import threading
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest

from cloudjobs import Delivery, Job
from cloudjobs.envelope import Envelope

WAIT = 5.0


def _job() -> Job:
    now = datetime.now(UTC)
    delivery = Delivery("m", "r", "{}", {}, 1, now, "q")
    envelope = Envelope(id="j", type="t", payload=None, correlation_id="c", enqueued_at=now)
    return Job("j", "t", 1, 3, now, "c", "q", timedelta(seconds=30), None, delivery, envelope)


def test_each_job_gets_its_own_unset_event() -> None:
    first, second = _job(), _job()

    assert isinstance(first.cancel_signal, threading.Event)
    assert first.cancel_signal is not second.cancel_signal
    assert not first.cancel_signal.is_set()
    assert not first.cancelled


def test_set_is_seen_by_is_set_wait_and_cancelled_and_clear_undoes_it() -> None:
    job = _job()

    job.cancel_signal.set()

    assert job.cancel_signal.is_set()
    assert job.cancelled
    assert job.cancel_signal.wait(0)
    job.cancel_signal.clear()
    assert not job.cancelled
    assert not job.cancel_signal.wait(0.01)


@pytest.mark.parametrize("first_use", ["wait", "set"])
def test_a_thread_waiting_on_the_signal_wakes_when_another_sets_it(first_use: str) -> None:
    job = _job()
    waiting = threading.Event()
    woke: list[bool] = []

    def wait() -> None:
        waiting.set()
        woke.append(job.cancel_signal.wait(WAIT))

    if first_use == "set":
        # The condition is made by a set() before anyone waits (then cleared again).
        job.cancel_signal.set()
        job.cancel_signal.clear()
    waiter = threading.Thread(target=wait)
    waiter.start()
    assert waiting.wait(WAIT)
    job.cancel_signal.set()
    waiter.join(WAIT)

    assert woke == [True]


def test_threads_using_a_fresh_signal_at_once_share_one_condition() -> None:
    """A condition made twice would lose a wakeup: every first use must find the same one."""
    for _ in range(50):
        job = _job()
        start = threading.Barrier(4)
        seen: list[object] = []

        def use(job: Job = job, start: threading.Barrier = start, seen: list[object] = seen) -> None:
            start.wait(WAIT)
            job.cancel_signal.wait(0)
            seen.append(job.cancel_signal._cond)  # type: ignore[attr-defined]

        threads = [threading.Thread(target=use) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)

        assert len(seen) == 4
        assert len({id(condition) for condition in seen}) == 1


def test_other_missing_attributes_still_raise_attribute_error() -> None:
    signal = _job().cancel_signal

    with pytest.raises(AttributeError, match="no_such_thing"):
        signal.no_such_thing  # type: ignore[attr-defined]  # noqa: B018


def test_a_signal_given_to_the_job_is_kept() -> None:
    given = threading.Event()
    other = _job()
    job = Job(
        "j",
        "t",
        1,
        3,
        other.enqueued_at,
        "c",
        "q",
        timedelta(1),
        None,
        other.message,
        other.envelope,
        cancel_signal=given,
    )

    given.set()

    assert job.cancel_signal is given
    assert job.cancelled
    assert "cancel_signal" in {field.name for field in fields(Job)}

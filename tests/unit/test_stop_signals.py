"""SIGTERM/SIGINT handling takes no lock in the handler: a signal that lands while the main thread
holds a lock that stopping needs (an event's, in the middle of ``Event.set()`` or ``Event.wait()``)
stops the process instead of deadlocking it.

The signals are raised in this process with ``signal.raise_signal``, which runs the Python handler
at once, inside the ``with`` block that holds the lock: the exact spot a real signal can land in.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from cloudjobs.runtimes.signals import install_stop_signals

_DEADLINE = 20.0
"""Seconds an awaited event may take before a test fails (the machine may be busy)."""


@dataclass
class _Calls:
    """What the installed ``stop`` and ``force`` saw; ``stop`` needs :attr:`lock`, as
    ``Worker.stop`` needs its events' locks, which the main thread may hold when a signal comes."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: threading.Event = field(default_factory=threading.Event)
    stop_on_main_thread: list[bool] = field(default_factory=list)
    forced: list[tuple[signal.Signals, bool]] = field(default_factory=list)
    restore: Callable[[], None] = lambda: None

    def stop(self) -> None:
        if self.lock.acquire(timeout=5):
            self.lock.release()
            self.stop_on_main_thread.append(threading.current_thread() is threading.main_thread())
            self.stopped.set()

    def force(self, received: signal.Signals) -> None:
        self.forced.append((received, threading.current_thread() is threading.main_thread()))


@pytest.fixture
def calls() -> Iterator[_Calls]:
    """Installs the handlers with a recording ``stop``/``force``; restores the previous ones after."""
    recorded = _Calls()
    recorded.restore = install_stop_signals(recorded.stop, recorded.force)
    try:
        yield recorded
    finally:
        recorded.restore()


def test_a_signal_landing_while_the_main_thread_holds_a_lock_stop_needs_still_stops(calls: _Calls) -> None:
    with calls.lock:
        signal.raise_signal(signal.SIGTERM)
        assert not calls.stopped.is_set()  # stop() waits for the lock, off the main thread
    assert calls.stopped.wait(_DEADLINE), "stop() never ran: the handler waited for its own thread's lock"
    assert calls.stop_on_main_thread == [False]
    assert calls.forced == []


def test_the_second_signal_forces_on_the_main_thread_and_stop_runs_once(calls: _Calls) -> None:
    with calls.lock:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
        # force runs in the handler itself, so that it can raise on the main thread.
        assert calls.forced == [(signal.SIGINT, True)]
    assert calls.stopped.wait(_DEADLINE)
    signal.raise_signal(signal.SIGTERM)
    assert calls.forced == [(signal.SIGINT, True), (signal.SIGTERM, True)]
    assert calls.stop_on_main_thread == [False]


def test_restoring_puts_the_previous_handlers_back() -> None:
    def previous(signum: int, frame: object) -> None:
        pass

    before = signal.signal(signal.SIGTERM, previous)
    try:
        restore = install_stop_signals(lambda: None, lambda received: None)
        assert signal.getsignal(signal.SIGTERM) is not previous
        restore()
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, before)


_WORKER_SCRIPT = textwrap.dedent(
    """
    import signal

    from cloudjobs import CloudJobs, MemoryBackend, Settings
    from cloudjobs.runtimes.signals import install_stop_signals

    app = CloudJobs(settings=Settings(_env_file=None), backend=MemoryBackend())
    worker = app.worker()
    restore = install_stop_signals(worker.stop, worker._force)
    # The main thread inside Event.set() or Event.wait() of the event stop() sets, when two
    # signals come: the handler must not set that event itself.
    with worker._stop_requested._cond:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
    print(worker._stop_requested.wait(20), worker._forced_by.name)
    restore()
    """
)


def test_a_worker_given_two_signals_inside_its_stop_events_lock_stops_forced() -> None:
    # In a process of its own: were the handler to deadlock, only that process would hang.
    finished = subprocess.run(
        [sys.executable, "-c", _WORKER_SCRIPT], capture_output=True, text=True, timeout=30, check=False
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["True", "SIGTERM"]


def test_the_signals_are_logged_off_the_main_thread_and_before_restore_returns(calls: _Calls) -> None:
    records: list[tuple[str, bool]] = []

    class _Recording(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            # Only the signals' lines: a worker another test left behind may log here meanwhile.
            if record.getMessage().startswith("received "):
                records.append((record.getMessage(), threading.current_thread() is threading.main_thread()))

    recording = _Recording()
    logger = logging.getLogger("cloudjobs.worker")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(recording)
    try:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        assert calls.stopped.wait(_DEADLINE)
        calls.restore()
    finally:
        logger.removeHandler(recording)
        logger.setLevel(level)
    assert records == [
        ("received SIGINT", False),
        ("received SIGTERM again: stopping without waiting for running jobs", False),
    ]


_BLOCKED_LOG_SCRIPT = textwrap.dedent(
    """
    import io, logging, os, signal, threading, time

    from cloudjobs.logs import GatheringStreamHandler
    from cloudjobs.runtimes.signals import install_stop_signals

    # The worker's log output, into a pipe whose reader is slow: a long line blocks its write.
    read_end, write_end = os.pipe()
    stream = io.TextIOWrapper(io.BufferedWriter(io.FileIO(write_end, "w")), line_buffering=True)
    logging.getLogger().addHandler(GatheringStreamHandler(stream))
    logging.getLogger().setLevel(logging.INFO)
    forced = []
    restore = install_stop_signals(lambda: None, forced.append)
    written = []

    def read() -> None:
        time.sleep(1.0)  # the main thread is blocked in its write by now
        while chunk := os.read(read_end, 1 << 16):
            written.append(chunk)

    def signal_twice() -> None:
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    reader = threading.Thread(target=read)
    reader.start()
    threading.Thread(target=signal_twice).start()
    logging.getLogger("app").warning("x" * 1_000_000)  # blocks until the reader drains the pipe
    restore()
    stream.close()
    reader.join()
    lines = b"".join(written).decode().splitlines()
    print(forced, [line for line in lines if not line.startswith("x")])
    """
)


def test_a_second_signal_while_the_main_thread_is_blocked_writing_a_log_line_forces_cleanly() -> None:
    # A logged line in the handler would re-enter the blocked write: "reentrant call", raised into
    # the main thread instead of the forced stop.
    finished = subprocess.run(
        [sys.executable, "-c", _BLOCKED_LOG_SCRIPT], capture_output=True, text=True, timeout=30, check=False
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == (
        "[<Signals.SIGTERM: 15>] ['received SIGTERM', "
        "'received SIGTERM again: stopping without waiting for running jobs']"
    )

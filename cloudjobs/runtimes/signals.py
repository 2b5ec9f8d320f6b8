"""SIGTERM and SIGINT for a worker: the first asks for a graceful stop, the second forces it.

A Python signal handler runs on the main thread between two bytecodes of whatever it was running,
possibly in the middle of ``threading.Event.set()`` or ``Event.wait()``, holding the event's
non-reentrant lock, or inside a write to stderr that a slow log reader keeps blocked. A handler that
set that event again would wait for itself forever, and one that logged a line would fail the
interrupted write with "reentrant call" (a ``RuntimeError``, raised into whatever the main thread was
doing). A second signal soon after the first (two Ctrl-C, an orchestrator's SIGTERM repeated) lands
in exactly those places: the first stop is waking the main thread, which logs the shutdown. So the
handler neither takes a lock nor logs. It counts the signal (``next()`` on a counter is one C call,
which a nested handler cannot split) and hands it to a thread, through a :class:`queue.SimpleQueue`
(whose ``put`` is reentrant), that logs it and, for the first, calls ``stop``. ``force`` runs in the
handler itself, on the main thread, so that it may raise there (``SystemExit``) and end what the
main thread was doing; it must take no lock and log nothing.
"""

from __future__ import annotations

import itertools
import logging
import queue
import signal
import threading
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger("cloudjobs.worker")

_LOG_WAIT = 5.0
"""Seconds :func:`install_stop_signals`' restore waits for the signals received to be logged."""


def install_stop_signals(
    stop: Callable[[], None], force: Callable[[signal.Signals], None]
) -> Callable[[], None]:
    """Call ``stop`` on the first SIGTERM/SIGINT and ``force`` (with the signal) on any later one.

    ``stop`` is called on a thread of its own (it may take locks and block), which also logs each
    signal; ``force`` in the signal handler, on the main thread (it may raise there, and must take
    no lock and log nothing). Signals can only be handled on the main thread: elsewhere nothing is
    installed.

    Returns:
        A function that puts the previous handlers back.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    received_so_far = itertools.count()
    received: queue.SimpleQueue[tuple[signal.Signals, bool] | None] = queue.SimpleQueue()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signal_received = signal.Signals(signum)
        is_first = next(received_so_far) == 0
        received.put((signal_received, is_first))
        if not is_first:
            force(signal_received)

    def log_and_stop() -> None:
        while (taken := received.get()) is not None:
            signal_received, is_first = taken
            if is_first:
                logger.info("received %s", signal_received.name)
                stop()
            else:
                logger.warning(
                    "received %s again: stopping without waiting for running jobs", signal_received.name
                )

    thread = threading.Thread(target=log_and_stop, name="cloudjobs-signals", daemon=True)
    thread.start()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        received.put(None)
        # The lines of signals received so far are logged before this returns (a forced exit
        # included), unless stop() hangs.
        thread.join(_LOG_WAIT)

    return restore

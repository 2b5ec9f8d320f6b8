"""SIGTERM and SIGINT for a worker: the first asks for a graceful stop, the second forces it.

A Python signal handler runs on the main thread between two bytecodes of whatever it was running,
possibly in the middle of ``threading.Event.set()`` or ``Event.wait()``, holding the event's
non-reentrant lock. A handler that set that event again would wait for itself forever, and a second
signal soon after the first (two Ctrl-C, an orchestrator's SIGTERM repeated) lands in exactly those
places: the first stop is waking the main thread. So the handler takes no lock. It counts the signal
(``next()`` on a counter is one C call, which a nested handler cannot split), and passes the first
one to a thread that logs it and calls ``stop``, through a :class:`queue.SimpleQueue`, whose ``put``
is reentrant. ``force`` runs in the handler itself, on the main thread, so that it may raise there
(``SystemExit``) and end what the main thread was doing; it must take no lock.
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


def install_stop_signals(
    stop: Callable[[], None], force: Callable[[signal.Signals], None]
) -> Callable[[], None]:
    """Call ``stop`` on the first SIGTERM/SIGINT and ``force`` (with the signal) on any later one.

    ``stop`` is called on a thread of its own (it may take locks and block); ``force`` in the
    signal handler, on the main thread (it may raise there, and must take no lock). Signals can only
    be handled on the main thread: elsewhere nothing is installed.

    Returns:
        A function that puts the previous handlers back.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    received_so_far = itertools.count()
    first: queue.SimpleQueue[signal.Signals | None] = queue.SimpleQueue()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received = signal.Signals(signum)
        if next(received_so_far) == 0:
            first.put(received)
            return
        # logging's own locks are reentrant: a line from here cannot wait for the main thread.
        logger.warning("received %s again: stopping without waiting for running jobs", received.name)
        force(received)

    def call_stop() -> None:
        if (received := first.get()) is None:
            return
        logger.info("received %s", received.name)
        stop()

    threading.Thread(target=call_stop, name="cloudjobs-signals", daemon=True).start()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        first.put(None)  # ends the thread if no signal came

    return restore

"""SIGTERM and SIGINT for a worker: the first asks for a graceful stop, the second forces it."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger("cloudjobs.worker")


def install_stop_signals(
    stop: Callable[[], None], force: Callable[[signal.Signals], None]
) -> Callable[[], None]:
    """Call ``stop`` on the first SIGTERM/SIGINT and ``force`` (with the signal) on any later one.

    Signals can only be handled on the main thread: elsewhere nothing is installed.

    Returns:
        A function that puts the previous handlers back.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    received_before = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received = signal.Signals(signum)
        if received_before.is_set():
            logger.warning("received %s again: stopping without waiting for running jobs", received.name)
            force(received)
            return
        received_before.set()
        logger.info("received %s", received.name)
        stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore

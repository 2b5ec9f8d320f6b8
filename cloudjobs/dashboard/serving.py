"""Serving the dashboard in a thread of this process (tests, screenshots, benchmarks, a worker that
shows its own dashboard): uvicorn on a free port of 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serving(application: Starlette, *, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Serve ``application`` for the ``with`` block (its lifespan runs: the chart samples); yields its
    base URL. Raises RuntimeError when the server does not start within 30 s."""
    config = uvicorn.Config(application, host=host, port=port or free_port(host), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="cloudjobs-dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the dashboard did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)

"""``GET /healthz`` for a worker started with a health port (http.server loads only then)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudjobs.errors import ConfigurationError
from cloudjobs.runtimes.health import HEALTH_PATH, WorkerHealth, logger


class HealthServer:
    """``GET /healthz`` on a daemon thread: 200 with ``{"status": "ok", ...}``, 503 when stalled.

    Args:
        health: computes the current health on each request (not cached: a wedged thread that would
            refresh a cache must not hide itself).
        port: the TCP port (0 picks a free one, see :attr:`port`).
        address: the address to listen on.

    Raises:
        ConfigurationError: the port cannot be bound.
    """

    def __init__(self, health: Callable[[], WorkerHealth], *, port: int, address: str) -> None:
        handler = type("_BoundHealthHandler", (_HealthHandler,), {"health": staticmethod(health)})
        try:
            self._server = ThreadingHTTPServer((address, port), handler)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve health checks on {address}:{port}: {exc.strerror or exc}",
                setting="--health-port",
            ) from exc
        self._server.daemon_threads = True
        self.address = address
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cloudjobs-health", daemon=True
        )

    def start(self) -> None:
        """Start answering requests."""
        self._thread.start()
        logger.info("serving health checks on http://%s:%d%s", self.address, self.port, HEALTH_PATH)

    def close(self) -> None:
        """Stop answering and free the port."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


class _HealthHandler(BaseHTTPRequestHandler):
    health: Callable[[], WorkerHealth]

    def do_GET(self) -> None:
        """Answer ``/healthz`` with the worker's health (200 or 503), anything else with 404."""
        if self.path.split("?", 1)[0] != HEALTH_PATH:
            self._answer(404, {"error": f"not found; health is at {HEALTH_PATH}"})
            return
        health = self.health()
        self._answer(200 if health.is_healthy else 503, health.as_json())

    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Log each request at DEBUG rather than on stderr."""
        # A probe every few seconds would flood the job logs: keep requests at DEBUG.
        logger.debug("health check: " + format, *args)

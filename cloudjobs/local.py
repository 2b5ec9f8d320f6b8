"""A local AWS endpoint for development and tests: moto in server mode, in a subprocess.

moto is an optional extra (``pip install 'cloudjobs[local]'``); nothing of it is imported here until a
server starts, and then only in the child process.
"""

from __future__ import annotations

import http.client
import importlib.util
import socket
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import IO, Final, Self

from cloudjobs.errors import PortInUseError

LOCAL_REGION: Final = "us-east-1"
"""The region local clients use (moto's default)."""
_POLL_INTERVAL_SECONDS: Final = 0.05
_START_ATTEMPTS: Final = 3


def local_environment(endpoint_url: str) -> dict[str, str]:
    """The environment variables a boto3 process needs to talk to a local endpoint.

    Args:
        endpoint_url: the local server's URL, for example ``LocalAwsServer.endpoint_url``.

    Returns:
        ``AWS_ENDPOINT_URL``, the region (``AWS_REGION`` and ``AWS_DEFAULT_REGION``) and dummy
        credentials (``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` set to ``testing``).
    """
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_REGION": LOCAL_REGION,
        "AWS_DEFAULT_REGION": LOCAL_REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


class LocalAwsServer:
    """moto's server (SQS, DynamoDB, ...) run as a subprocess on a free local port.

    Use it as a context manager: entering starts the server and waits until it answers HTTP,
    leaving stops it. The server keeps its state in memory and loses it when stopped.

    Args:
        host: the address to bind; keep the loopback address unless the server must be shared.
        port: the port to bind; a free one is picked when not given.
        start_timeout_seconds: how long to wait for the server to answer before giving up.
        stop_timeout_seconds: how long to wait after asking it to stop before killing it.

    Raises:
        ImportError: moto (with its server dependencies) is not installed.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        start_timeout_seconds: float = 30.0,
        stop_timeout_seconds: float = 5.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._start_timeout_seconds = start_timeout_seconds
        self._stop_timeout_seconds = stop_timeout_seconds
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        """The server's URL, ``http://<host>:<port>``.

        Raises:
            RuntimeError: the server is not running.
        """
        if self._process is None or self._port is None:
            raise RuntimeError("the local AWS server is not running")
        return f"http://{self.host}:{self._port}"

    def start(self) -> None:
        """Start the server and return once it answers HTTP.

        Raises:
            ImportError: moto's server is not installed (install ``cloudjobs[local]``).
            PortInUseError: the port asked for is taken.
            RuntimeError: the server exited or did not answer within ``start_timeout_seconds``.
        """
        if self._process is not None:
            return
        _require_moto_server()
        if self._requested_port is not None:
            # Refuse before starting a child that would only fail to bind, with an error that says so.
            if not _is_free(self.host, self._requested_port):
                raise PortInUseError(host=self.host, port=self._requested_port)
            try:
                self._launch(self._requested_port)
            except _ExitedEarlyError:
                if not _is_free(self.host, self._requested_port):  # taken since the check
                    raise PortInUseError(host=self.host, port=self._requested_port) from None
                raise
            return
        # A picked port can be taken by someone else before the child binds it: try a few.
        for attempt in range(_START_ATTEMPTS):
            try:
                self._launch(_free_port(self.host))
                return
            except _ExitedEarlyError:
                if attempt == _START_ATTEMPTS - 1:
                    raise

    def wait(self) -> int:
        """Block until the server exits (it runs until stopped); returns its exit code.

        Raises:
            RuntimeError: the server is not running.
        """
        if self._process is None:
            raise RuntimeError("the local AWS server is not running")
        return self._process.wait()

    def stop(self) -> None:
        """Stop the server: terminate it, and kill it if it is still running after the stop timeout."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, timeout_seconds=self._stop_timeout_seconds)
        if self._log is not None:
            self._log.close()
            self._log = None
        self._port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch(self, port: int) -> None:
        # The server logs every request: a file (not a pipe nobody drains) keeps it from blocking.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in the terminal reaches only the owner, which stops the server
            # in order (stop()) instead of racing the server's own death.
            start_new_session=True,
        )
        self._port = port
        deadline = time.monotonic() + self._start_timeout_seconds
        while True:
            if self._process.poll() is not None:
                output = self._output()
                self.stop()
                raise _ExitedEarlyError(f"the moto server exited on start:\n{output}")
            if _answers_http(self.host, port):
                return
            if time.monotonic() >= deadline:
                output = self._output()
                self.stop()
                raise RuntimeError(
                    f"the moto server did not answer on port {port} within "
                    f"{self._start_timeout_seconds:g} s:\n{output}"
                )
            time.sleep(_POLL_INTERVAL_SECONDS)

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", errors="replace")[-4000:]


class _ExitedEarlyError(RuntimeError):
    """The server process exited before answering (most often: the port was taken)."""


def stop_process(process: subprocess.Popen[bytes], *, timeout_seconds: float) -> None:
    """Terminate a server process and wait for it; kill it if it is still running after the timeout."""
    process.terminate()
    try:
        process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _require_moto_server() -> None:
    # find_spec on top-level names imports nothing; moto's server also needs flask.
    for module in ("moto", "flask", "flask_cors"):
        if importlib.util.find_spec(module) is None:
            raise ImportError(
                f"the local AWS server needs moto's server ({module!r} is missing): "
                "pip install 'cloudjobs[local]'"
            )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _is_free(host: str, port: int) -> bool:
    # SO_REUSEADDR, as the server binds: a port left in TIME_WAIT by a previous run is free to it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _answers_http(host: str, port: int) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=1)
    try:
        connection.request("GET", "/moto-api/")
        connection.getresponse().read()
    except OSError:
        return False
    finally:
        connection.close()
    return True

"""A PostgreSQL server for the outbox tests: a throwaway cluster on 127.0.0.1 at a free port.

The server binaries come from the Debian packages (``apt-get install postgresql``; ``.ci/run``
installs them where they are missing). ``initdb`` refuses to run as root, so as root the cluster
is created and run as the ``postgres`` user (``runuser``), in a temporary directory it owns.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from cloudjobs.local import stop_process

_BINARIES: Final = Path("/usr/lib/postgresql")
INSTALL_HINT: Final = "install the PostgreSQL server: apt-get install -y postgresql (as .ci/run does)"


class PostgresMissingError(RuntimeError):
    """The PostgreSQL server binaries are not installed; the message says how to install them."""


def find_binaries() -> Path:
    """The ``bin`` directory of the newest installed PostgreSQL server.

    Raises:
        PostgresMissingError: no ``initdb`` under /usr/lib/postgresql/*/bin.
    """
    found = sorted(_BINARIES.glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    if not found:
        raise PostgresMissingError(f"no PostgreSQL server under {_BINARIES}/*/bin: {INSTALL_HINT}")
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresServer:
    """A PostgreSQL cluster of its own, trust authentication on 127.0.0.1; a context manager."""

    def __init__(self, *, start_timeout_seconds: float = 60.0) -> None:
        self._start_timeout_seconds = start_timeout_seconds
        self._directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._binaries = Path()
        self._as_owner: list[str] = []
        self.port = 0

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3) for ``database`` as the superuser ``postgres``."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Create the cluster and start the server; return once it accepts connections.

        Raises:
            PostgresMissingError: the binaries are not installed.
            RuntimeError: the server did not start.
        """
        binaries = self._binaries = find_binaries()
        self._directory = Path(tempfile.mkdtemp(prefix="cloudjobs-pg-"))
        data = self._directory / "data"
        as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self._directory, user="postgres", group="postgres")
            as_owner = ["runuser", "-u", "postgres", "--"]
        self._as_owner = as_owner
        subprocess.run(
            [
                *as_owner,
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.port = _free_port()
        self._process = subprocess.Popen(
            [
                *as_owner,
                str(binaries / "postgres"),
                "-D",
                str(data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self._directory),
                "-c",
                "fsync=off",
                "-c",
                "max_connections=100",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_until_ready(binaries)

    def _wait_until_ready(self, binaries: Path) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._start_timeout_seconds
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited with code {self._process.returncode}")
            ready = subprocess.run(
                [str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
                timeout=30,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not accept connections within {self._start_timeout_seconds}s")

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        if self._process is not None and self._directory is not None:
            # "fast": connections still open (a test's engine) are closed rather than waited for.
            subprocess.run(
                [
                    *self._as_owner,
                    str(self._binaries / "pg_ctl"),
                    "stop",
                    "-D",
                    str(self._directory / "data"),
                    "-m",
                    "fast",
                    "-w",
                ],
                capture_output=True,
                timeout=60,
            )
            stop_process(self._process, timeout_seconds=30)
            self._process = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

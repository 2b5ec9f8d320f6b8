"""A CloudJobs app for the worker-process tests: ``cloudjobs worker tests.integration.worker_app:jobs``.

Every handler appends ``start`` and ``end`` events to the ledger file named by ``$WORKER_APP_LEDGER``,
one JSON object per line (``event``, ``job``, ``pid``, ``time``), so a test can watch worker processes
from outside. Each line goes out in a single ``write`` to a file opened with ``O_APPEND`` and is
fsynced, so lines from concurrent handlers and processes never interleave and are never lost.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel

from cloudjobs import CloudJobs

LEDGER_VARIABLE: Final = "WORKER_APP_LEDGER"
"""The environment variable naming the ledger file (read when a handler runs, not on import)."""
WORK_JOB: Final = "work"
GATED_JOB: Final = "gated"
_GATE_POLL_SECONDS: Final = 0.05

jobs = CloudJobs()


class Work(BaseModel):
    """A job that works for ``seconds``."""

    id: str
    seconds: float


class Gated(BaseModel):
    """A job that runs until ``release_file`` exists, for at most ``max_seconds``."""

    id: str
    release_file: str
    max_seconds: float


def record(event: Literal["start", "end", "completed", "granted"], job: str) -> None:
    """Append one event for ``job`` by this process to the ledger."""
    line = json.dumps({"event": event, "job": job, "pid": os.getpid(), "time": time.time()}) + "\n"
    descriptor = os.open(os.environ[LEDGER_VARIABLE], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line.encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass(frozen=True, slots=True)
class Event:
    """A ledger line: ``start``, ``end``, ``completed`` or ``granted`` of ``job`` in process ``pid`` at
    ``time``."""

    event: str
    job: str
    pid: int
    time: float


def read_ledger(path: Path) -> list[Event]:
    """The ledger's complete lines so far (a line still being written is left out)."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines(keepends=True)
    return [Event(**json.loads(line)) for line in lines if line.endswith("\n")]


@jobs.job(WORK_JOB)
def work(payload: Work) -> None:
    """Simulate ``payload.seconds`` of work (the sleep is the work itself)."""
    record("start", payload.id)
    time.sleep(payload.seconds)
    record("end", payload.id)


@jobs.job(GATED_JOB)
def gated(payload: Gated) -> None:
    """Run until the release file exists; fail (to be retried) if it does not appear in time."""
    record("start", payload.id)
    deadline = time.monotonic() + payload.max_seconds
    release = Path(payload.release_file)
    while not release.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} did not appear within {payload.max_seconds}s")
        time.sleep(_GATE_POLL_SECONDS)
    record("end", payload.id)

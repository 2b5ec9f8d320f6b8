"""Fixtures shared by the unit tests: a manual clock, a fixed random source, no ambient settings."""

from __future__ import annotations

import os

import pytest

from cloudjobs import CloudJobs, ManualClock, MemoryBackend, Settings


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's CLOUDJOBS_* variables must not change what the unit tests see.
    for name in list(os.environ):
        if name.upper().startswith("CLOUDJOBS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when a test moves it."""
    return ManualClock()


@pytest.fixture
def backend(clock: ManualClock) -> MemoryBackend:
    """A standard memory queue with a DLQ after five receives."""
    return MemoryBackend("jobs", clock=clock)


@pytest.fixture
def jobs(clock: ManualClock, backend: MemoryBackend) -> CloudJobs:
    """An app on the memory queue with default settings and jitter fixed at one half."""
    return CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=clock, random=lambda: 0.5)

"""Test helpers for users: a pytest plugin (registered automatically) and helpers for the memory queue.

Fixtures:

- ``memory_backend``: a fresh :class:`~cloudjobs.backends.memory.MemoryBackend` with a DLQ.
- ``manual_clock``: a :class:`~cloudjobs.clock.ManualClock`, for tests of delays and backoff.

For a module-level ``jobs = CloudJobs()``, ``with jobs.testing() as queue: ...; jobs.drain()`` swaps
in a memory queue for the block and runs everything enqueued to completion.
"""

from __future__ import annotations

import pytest

from cloudjobs.backends.memory import MemoryBackend
from cloudjobs.clock import ManualClock


@pytest.fixture
def manual_clock() -> ManualClock:
    """A clock that moves only when told to."""
    return ManualClock()


@pytest.fixture
def memory_backend() -> MemoryBackend:
    """A fresh in-memory queue with SQS's semantics and a dead-letter queue."""
    return MemoryBackend("test-jobs")

"""Queue backends: the protocol every runtime uses, and its implementations."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TypeGuard

if TYPE_CHECKING:
    from cloudjobs.backends.memory import MemoryBackend


def is_memory_backend(backend: object) -> TypeGuard[MemoryBackend]:
    """Whether ``backend`` is a :class:`~cloudjobs.backends.memory.MemoryBackend`, without importing
    the memory backend: no instance exists before its module is loaded, so a consumer on SQS (a
    Lambda cold start) never loads it."""
    memory_backend = getattr(sys.modules.get("cloudjobs.backends.memory"), "MemoryBackend", None)
    return memory_backend is not None and isinstance(backend, memory_backend)

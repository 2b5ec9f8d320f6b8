"""Where large message bodies are kept: the :class:`PayloadStore` protocol and the memory store."""

from __future__ import annotations

import threading
from typing import Final, Protocol
from urllib.parse import quote

from cloudjobs.errors import PayloadMissingError
from cloudjobs.payloads.pointer import Pointer

MEMORY_BUCKET: Final = "memory"


class PayloadStore(Protocol):
    """Keeps message bodies too large for their queue; every method may raise
    :class:`~cloudjobs.errors.PayloadStoreError`."""

    @property
    def bucket(self) -> str:
        """The bucket new bodies are written to (what pointers name)."""
        ...

    def put(self, key: str, body: bytes) -> Pointer:
        """Store ``body`` under ``key`` (replacing what is there) and say where it is."""
        ...

    def get(self, pointer: Pointer) -> bytes:
        """The body stored at ``pointer``.

        Raises:
            PayloadMissingError: nothing is stored there.
        """
        ...

    def delete(self, pointer: Pointer) -> None:
        """Delete the body at ``pointer`` (nothing there is not an error)."""
        ...


def object_key(job_type: str, job_id: str) -> str:
    """The key a job's body is stored under: ``cloudjobs/<job type>/<job id>`` (both URL-quoted, so a
    type or id with ``/`` stays one path segment)."""
    return f"cloudjobs/{quote(job_type, safe='')}/{quote(job_id, safe='')}"


class MemoryPayloadStore:
    """A :class:`PayloadStore` in memory, for tests and ``jobs.testing()``.

    Args:
        bucket: the bucket name its pointers carry (a pointer to another bucket is missing here).
    """

    def __init__(self, bucket: str = MEMORY_BUCKET) -> None:
        self.bucket = bucket
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, body: bytes) -> Pointer:
        """Store ``body`` under ``key``."""
        with self._lock:
            self._objects[key] = bytes(body)
        return Pointer(self.bucket, key)

    def get(self, pointer: Pointer) -> bytes:
        """The stored body.

        Raises:
            PayloadMissingError: nothing is stored there.
        """
        with self._lock:
            body = self._objects.get(pointer.key) if pointer.bucket == self.bucket else None
        if body is None:
            raise PayloadMissingError(
                f"no stored body at {pointer.bucket}/{pointer.key}", bucket=pointer.bucket, key=pointer.key
            )
        return body

    def delete(self, pointer: Pointer) -> None:
        """Forget the body at ``pointer``."""
        with self._lock:
            if pointer.bucket == self.bucket:
                self._objects.pop(pointer.key, None)

    def keys(self) -> list[str]:
        """The keys stored (for tests)."""
        with self._lock:
            return sorted(self._objects)

"""A pointer message's stored body, read back in the delivery pipeline before decoding (the
handler never sees the pointer), and its deletion once its job completed (``CLOUDJOBS_PAYLOAD_DELETE``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from cloudjobs.middleware import RunHandle
from cloudjobs.outcomes import Completed, Outcome
from cloudjobs.payloads.pointer import Pointer, pointer_of
from cloudjobs.payloads.store import PayloadStore
from cloudjobs.run import Run

logger = logging.getLogger("cloudjobs.payloads")


@dataclass(frozen=True, slots=True)
class Stored:
    """A pointer message's body, read from the store."""

    pointer: Pointer
    body: str


def read_stored(store: PayloadStore, pointer: Pointer) -> Stored:
    """The body at ``pointer``, as text.

    Raises:
        PayloadMissingError: the object is not there.
        PayloadStoreError: the store failed (worth a retry).
        UnicodeDecodeError: the object is not UTF-8 text.
    """
    return Stored(pointer, store.get(pointer).decode("utf-8"))


class PayloadDeletion:
    """Deletes a pointer message's stored body once its job completed (after its record is settled:
    install it before the record middleware, whose settle then runs first).

    A delete that fails is logged; the body then expires by the bucket's lifecycle rule.
    """

    def __init__(self, store: PayloadStore) -> None:
        self.store = store

    def start(self, run: Run) -> RunHandle | None:
        """A handle for runs of pointer messages only."""
        pointer = pointer_of(run.delivery)
        return None if pointer is None else _Deletion(self.store, pointer)


class _Deletion(RunHandle):
    __slots__ = ("_pointer", "_store")

    def __init__(self, store: PayloadStore, pointer: Pointer) -> None:
        self._store = store
        self._pointer = pointer

    def settle(self, run: Run, outcome: Outcome) -> Outcome:
        if isinstance(outcome, Completed):
            try:
                self._store.delete(self._pointer)
            except Exception:
                logger.warning(
                    "deleting the stored body %s/%s failed; the bucket's lifecycle rule expires it",
                    self._pointer.bucket,
                    self._pointer.key,
                    exc_info=True,
                )
        return outcome


IsCompleted = Callable[[str], bool]
"""Whether the job of this id has a completed record (to acknowledge a body deleted after it ran)."""


def missing_body_outcome(job_id: str | None, is_completed: IsCompleted | None) -> Outcome | None:
    """Completed (acknowledge) when bodies are deleted after completion and the job's record says it
    completed: this is a redelivery of a job that ran. None otherwise: dead-letter it."""
    if is_completed is None or job_id is None:
        return None
    try:
        if is_completed(job_id):
            logger.info("job %s: stored body gone after its completion; acknowledged", job_id)
            return Completed()
    except Exception:
        logger.warning(
            "job %s: reading its record failed; its missing body dead-letters it", job_id, exc_info=True
        )
    return None

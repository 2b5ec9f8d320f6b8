"""A CloudJobs app for the relay-process tests: ``cloudjobs relay tests.integration.outbox_app:jobs``.

Its default queue is ``$CLOUDJOBS_QUEUE_URL``. When ``$OUTBOX_APP_STALL_FILE`` names a file that does
not exist yet, the first batch is sent, then the file is created and the send never returns: the
relay is stuck between a send and its mark, where a test kills it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Final

from cloudjobs import CloudJobs
from cloudjobs.backends.base import Delivery, OutgoingMessage, QueueInfo, SendResult
from cloudjobs.backends.sqs import SqsBackend

STALL_FILE_VARIABLE: Final = "OUTBOX_APP_STALL_FILE"


class StallAfterFirstSend:
    """An SQS backend (on ``$CLOUDJOBS_QUEUE_URL``, read on first use) whose first send, once
    done, announces itself and blocks forever."""

    def __init__(self, stall_file: Path | None) -> None:
        self._backend: SqsBackend | None = None
        self._stall_file = stall_file

    @property
    def _inner(self) -> SqsBackend:
        if self._backend is None:
            self._backend = SqsBackend(queue_url=os.environ["CLOUDJOBS_QUEUE_URL"])
        return self._backend

    def info(self) -> QueueInfo:
        """The queue's configuration."""
        return self._inner.info()

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send; the first time, then stall."""
        results = self._inner.send(messages)
        if self._stall_file is not None and not self._stall_file.exists():
            self._stall_file.write_text(str(len(messages)))
            threading.Event().wait()
        return results

    def receive(
        self, *, max_messages: int, wait: timedelta, visibility: timedelta | None = None
    ) -> list[Delivery]:
        """Receive from the queue."""
        return self._inner.receive(max_messages=max_messages, wait=wait, visibility=visibility)

    def delete(self, receipts: Sequence[str]) -> list[str]:
        """Delete from the queue."""
        return self._inner.delete(receipts)

    def change_visibility(self, changes: Sequence[tuple[str, timedelta]]) -> list[str]:
        """Change visibility on the queue."""
        return self._inner.change_visibility(changes)

    def dead_letter(self, delivery: Delivery, attributes: Mapping[str, str]) -> None:
        """Dead-letter on the queue."""
        self._inner.dead_letter(delivery, attributes)


def _build() -> CloudJobs:
    stall = os.environ.get(STALL_FILE_VARIABLE)
    return CloudJobs(backend=StallAfterFirstSend(Path(stall) if stall else None))


jobs = _build()

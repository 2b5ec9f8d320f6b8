"""The relay on SQLite: one relay at a time, holding a lock file; it polls with backoff.

SQLite has neither row locks nor notifications. A relay holds an exclusive ``flock`` on
``<database>-relay.lock`` for as long as it runs; another relay waits for it, and takes over when
the holder exits or dies (the operating system releases the lock of a killed process). A database
in memory lives in one process, where one relay is all there can be.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from datetime import datetime
from typing import Final

from sqlalchemy import Connection, Engine, Table, select

from cloudjobs.outbox.rows import PendingRow, take_in_order

logger = logging.getLogger("cloudjobs.outbox")

_ROWS_READ_PER_SEND: Final = 5
"""Unsent rows read per row sent, so that rows held back by their group's backoff leave room."""
_LOCK_RETRY_SECONDS: Final = 0.2


class SqliteRelayStore:
    """Claims rows for the one relay that holds the database's relay lock.

    Args:
        engine: the database (a SQLite engine).
        table: the outbox table.
    """

    is_notified = False
    """SQLite cannot notify: the relay polls."""

    def __init__(self, engine: Engine, table: Table) -> None:
        self._table = table
        database = engine.url.database
        in_memory = not database or database == ":memory:" or engine.url.query.get("mode") == "memory"
        self._lock_path = None if in_memory else f"{os.path.abspath(database or '')}-relay.lock"
        self._lock_file: int | None = None

    def claim(self, connection: Connection, now: datetime, limit: int) -> list[PendingRow]:
        """The earliest unsent rows that are due, at most ``limit``, a group's rows in id order."""
        table = self._table
        rows = connection.execute(
            select(table)
            .where(table.c.sent_at.is_(None))
            .order_by(table.c.id)
            .limit(limit * _ROWS_READ_PER_SEND)
        ).mappings()
        return take_in_order((PendingRow.of(row) for row in rows), now, limit)

    def hold(self, stop: threading.Event) -> bool:
        """Take the relay lock, waiting while another relay holds it; False when ``stop`` came first."""
        if self._lock_path is None or self._lock_file is not None:
            return True
        descriptor = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        waiting_logged = False
        while not stop.is_set():
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waiting_logged:
                    logger.info("another relay holds %s: waiting to take over", self._lock_path)
                    waiting_logged = True
                stop.wait(_LOCK_RETRY_SECONDS)
                continue
            self._lock_file = descriptor
            return True
        os.close(descriptor)
        return False

    def release(self) -> None:
        """Let another relay take over."""
        descriptor, self._lock_file = self._lock_file, None
        if descriptor is not None:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            os.close(descriptor)

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Return when ``stop`` is set or ``timeout`` passed."""
        stop.wait(timeout)

    def close(self) -> None:
        """Release the relay lock."""
        self.release()

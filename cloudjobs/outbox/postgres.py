"""The relay on PostgreSQL: several relays share the rows, woken by ``LISTEN``/``NOTIFY``.

Rows without a message group are claimed with ``FOR UPDATE SKIP LOCKED``: each relay takes rows no
other relay holds. Rows of a group must reach the queue in insertion order, so a relay first takes
the group's advisory lock (``pg_try_advisory_xact_lock``, skipping groups another relay holds) and
then its earliest unsent rows. Both kinds of lock last until the relay's transaction commits its
marks, so two live relays never send one row twice.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, Engine, Table, func, select, text

from cloudjobs.outbox.rows import PendingRow, take_in_order

logger = logging.getLogger("cloudjobs.outbox")

_GROUPS_PER_CLAIM: Final = 100
"""Groups with unsent rows looked at per claim, oldest first."""
_WAIT_SLICE_SECONDS: Final = 0.5
"""Longest single wait for a notification, so that a stop is seen within it."""


def notify(connection: Connection, channel: str) -> None:
    """Wake the relays listening on ``channel`` when the caller's transaction commits (PostgreSQL
    delivers a NOTIFY at commit, and drops it on rollback)."""
    connection.execute(select(func.pg_notify(channel, "")))


class PostgresRelayStore:
    """Claims rows for one relay among several and waits for new ones.

    Args:
        engine: the database (a PostgreSQL engine).
        table: the outbox table; its name is also the notification channel.
    """

    def __init__(self, engine: Engine, table: Table) -> None:
        self._engine = engine
        self._table = table
        self._listener: Any = None
        self._can_listen = engine.dialect.driver == "psycopg"
        if not self._can_listen:
            logger.warning(
                "the relay listens for new rows with psycopg (3) only; with the %s driver it polls",
                engine.dialect.driver,
            )

    @property
    def is_notified(self) -> bool:
        """True when new rows wake the relay (else it polls with backoff)."""
        return self._can_listen

    def claim(self, connection: Connection, now: datetime, limit: int) -> list[PendingRow]:
        """Lock and return rows to send: up to ``limit`` without a group and up to ``limit`` of
        groups this relay now holds, in id order. The locks last until ``connection`` commits."""
        table = self._table
        unsent = table.c.sent_at.is_(None)
        due = (table.c.next_attempt_at.is_(None)) | (table.c.next_attempt_at <= now)
        free = connection.execute(
            select(table)
            .where(unsent, table.c.group_id.is_(None), due)
            .order_by(table.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).mappings()
        rows = [PendingRow.of(row) for row in free]
        heads = connection.execute(
            select(table.c.queue, table.c.group_id, func.min(table.c.id).label("head"))
            .where(unsent, table.c.group_id.is_not(None))
            .group_by(table.c.queue, table.c.group_id)
            .order_by("head")
            .limit(_GROUPS_PER_CLAIM)
        ).all()
        grouped: list[PendingRow] = []
        for queue, group_id, _ in heads:
            if len(grouped) >= limit:
                break
            if not self._try_lock_group(connection, queue, group_id):
                continue  # another relay is sending this group
            # Read after taking the lock: rows another relay sent before releasing it are marked.
            candidates = connection.execute(
                select(table)
                .where(unsent, table.c.queue == queue, table.c.group_id == group_id)
                .order_by(table.c.id)
                .limit(limit - len(grouped))
                .with_for_update()
            ).mappings()
            grouped.extend(take_in_order((PendingRow.of(row) for row in candidates), now, limit))
        return sorted(rows + grouped, key=lambda row: row.id)

    def _try_lock_group(self, connection: Connection, queue: str, group_id: str) -> bool:
        # One 64-bit key per table, queue and group; a collision only makes two groups take turns.
        key = f"{self._table.name}\x1f{queue}\x1f{group_id}"
        locked = connection.execute(
            text("SELECT pg_try_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key}
        ).scalar_one()
        return bool(locked)

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Return when a row was committed (a notification), ``stop`` is set or ``timeout`` passed."""
        if not self._can_listen:
            stop.wait(timeout)
            return
        try:
            if self._listener is None:
                # A commit between the last claim and this LISTEN notified nobody: claim again first.
                self._listen()
                return
            listener = self._listener
            remaining = timeout
            while remaining > 0 and not stop.is_set():
                slice_seconds = min(remaining, _WAIT_SLICE_SECONDS)
                if any(True for _ in listener.notifies(timeout=slice_seconds, stop_after=1)):
                    # Several commits may have notified: one claim serves them all.
                    for _ in listener.notifies(timeout=0):
                        pass
                    return
                remaining -= slice_seconds
        except Exception as exc:  # a dropped connection: listen again next time, poll meanwhile
            logger.warning("lost the notification connection (%r); polling until it is back", exc)
            self.close()
            stop.wait(timeout)

    def _listen(self) -> None:
        if self._listener is None:
            pooled = self._engine.raw_connection()
            listener: Any = pooled.driver_connection
            # Out of the pool for good: it stays in LISTEN with autocommit on.
            pooled.detach()
            listener.autocommit = True
            channel = self._engine.dialect.identifier_preparer.quote(self._table.name)
            listener.execute(f"LISTEN {channel}")
            self._listener = listener

    def hold(self, stop: threading.Event) -> bool:
        """Start listening, before the first claim (several relays may run at once: nothing else
        to hold; always True)."""
        if self._can_listen:
            try:
                self._listen()
            except Exception as exc:  # the relay polls until listening works
                logger.warning("cannot listen for new rows yet (%r); polling meanwhile", exc)
        return True

    def release(self) -> None:
        """Nothing held."""

    def close(self) -> None:
        """Close the notification connection, if open."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.close()
            except Exception as exc:  # closing a broken connection must not hide why it broke
                logger.debug("closing the notification connection failed: %s", exc)

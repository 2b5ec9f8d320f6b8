"""The relay: reads committed outbox rows, sends them as ``jobs.enqueue`` would, marks them sent.

One pass (:meth:`Relay.relay_once`) is one database transaction: claim up to ten rows per kind,
send them through the app's producer in SendMessageBatch calls of ten, mark what was sent and
schedule a retry with backoff for what failed, then commit. A relay that dies between the send and
the commit has sent rows that are still unsent in the table: the next pass (its own or another
relay's) sends them again, under the same job id.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from sqlalchemy import Connection, Engine, Table, delete, update
from sqlalchemy.exc import DBAPIError

from cloudjobs.app import CloudJobs
from cloudjobs.backends.base import MAX_BATCH_ENTRIES
from cloudjobs.clock import Clock
from cloudjobs.errors import BatchEnqueueError, CloudjobsError
from cloudjobs.outbox.rows import PendingRow

logger = logging.getLogger("cloudjobs.outbox")

DEFAULT_RETENTION: Final = timedelta(days=1)
"""How long sent rows stay in the table (for inspection) before the relay deletes them."""
DEFAULT_POLL_INTERVAL: Final = timedelta(seconds=5)
"""Longest wait between two looks at the table when nothing wakes the relay."""
_FIRST_IDLE_WAIT: Final = timedelta(milliseconds=20)
_CLEANUP_EVERY: Final = timedelta(minutes=1)
_CLEANUP_ROWS: Final = 1_000
_RETRY_BASE: Final = timedelta(seconds=1)
_RETRY_CAP: Final = timedelta(minutes=5)
_MAX_ERROR_LENGTH: Final = 2_000


class RelayStore(Protocol):
    """How one database kind claims rows and waits for new ones (PostgreSQL, SQLite)."""

    @property
    def is_notified(self) -> bool:
        """True when :meth:`wait` returns as soon as a row is committed (else the relay backs off)."""
        ...

    def claim(self, connection: Connection, now: datetime, limit: int) -> list[PendingRow]:
        """Rows this relay may send now, in id order, locked until ``connection`` commits."""
        ...

    def hold(self, stop: threading.Event) -> bool:
        """Take what lets this relay run (SQLite: the one relay lock); False if ``stop`` came first."""
        ...

    def release(self) -> None:
        """Give up what :meth:`hold` took."""
        ...

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Return when new rows may be there, ``stop`` is set, or after ``timeout`` seconds."""
        ...

    def close(self) -> None:
        """Release every resource (connections, locks)."""
        ...


@dataclass(frozen=True, slots=True)
class RelayReport:
    """What a relay did while it ran.

    Attributes:
        sent: rows sent (a row re-sent after a failed mark counts again).
        failed: failed attempts to send a row (each is retried after its backoff).
    """

    sent: int
    failed: int


class Relay:
    """Sends the outbox's rows to their queues until stopped. Build it with
    :meth:`cloudjobs.outbox.Outbox.relay`.

    Args:
        jobs: the app whose producers send the rows (its queues by name).
        engine: the database.
        table: the outbox table.
        store: the database kind's way to claim and wait.
        retention: how long sent rows stay; zero deletes each row as it is sent.
        poll_interval: the longest wait between two looks at the table.
        clock: the time source of backoff and marks (default: the app's).
    """

    def __init__(
        self,
        jobs: CloudJobs,
        engine: Engine,
        table: Table,
        store: RelayStore,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        poll_interval: timedelta = DEFAULT_POLL_INTERVAL,
        clock: Clock | None = None,
    ) -> None:
        self._jobs = jobs
        self._engine = engine
        self._table = table
        self._store = store
        self._retention = retention
        self._poll_interval = poll_interval
        self._clock = clock or jobs.clock
        self._stop = threading.Event()
        self._sent = 0
        self._failed = 0

    def stop(self) -> None:
        """Ask :meth:`run` to return after the pass in progress; safe from any thread."""
        self._stop.set()

    def run(self) -> RelayReport:
        """Relay rows until :meth:`stop`; database errors are logged and retried with backoff.

        Returns:
            What was sent and what failed.
        """
        idle_wait = _FIRST_IDLE_WAIT
        last_cleanup: datetime | None = None
        try:
            if not self._store.hold(self._stop):
                return self.report
            logger.info("relay started on %s", self._table.name)
            while not self._stop.is_set():
                try:
                    sent = self.relay_once()
                    now = self._clock.now()
                    if last_cleanup is None or now - last_cleanup >= _CLEANUP_EVERY:
                        self.clean_up()
                        last_cleanup = now
                except DBAPIError as exc:
                    logger.warning("the outbox database failed (%s); trying again", exc)
                    sent = 0
                if sent:
                    idle_wait = _FIRST_IDLE_WAIT
                    continue
                if self._store.is_notified:
                    self._store.wait(self._poll_interval.total_seconds(), self._stop)
                else:
                    self._store.wait(idle_wait.total_seconds(), self._stop)
                    idle_wait = min(idle_wait * 2, self._poll_interval)
        finally:
            self._store.close()
        logger.info("relay stopped: %d rows sent, %d failed attempts", self._sent, self._failed)
        return self.report

    @property
    def report(self) -> RelayReport:
        """What this relay did so far."""
        return RelayReport(sent=self._sent, failed=self._failed)

    def relay_once(self) -> int:
        """One pass: claim, send, mark, commit. Returns the rows sent (0: nothing to do now).

        Raises:
            DBAPIError: the database failed; nothing was marked (sent rows are sent again).
        """
        with self._engine.begin() as connection:
            rows = self._store.claim(connection, self._clock.now(), MAX_BATCH_ENTRIES)
            if not rows:
                return 0
            failures = self._send(rows)
            now = self._clock.now()
            sent_ids = [row.id for row in rows if row.id not in failures]
            self._mark_sent(connection, sent_ids, now)
            for row in rows:
                if row.id in failures:
                    self._mark_failed(connection, row, failures[row.id], now)
        self._sent += len(sent_ids)
        self._failed += len(failures)
        return len(sent_ids)

    def clean_up(self) -> int:
        """Delete rows sent longer than the retention ago (a thousand per call); returns how many."""
        table = self._table
        cutoff = self._clock.now() - self._retention
        with self._engine.begin() as connection:
            old = (
                table.select()
                .with_only_columns(table.c.id)
                .where(table.c.sent_at.is_not(None), table.c.sent_at < cutoff)
                .limit(_CLEANUP_ROWS)
                .scalar_subquery()
            )
            return connection.execute(delete(table).where(table.c.id.in_(old))).rowcount

    def _send(self, rows: Sequence[PendingRow]) -> dict[int, str]:
        """Send rows queue by queue, in id order; returns row id → error for each row not sent."""
        by_queue: dict[str, list[PendingRow]] = {}
        for row in rows:
            by_queue.setdefault(row.queue, []).append(row)
        failures: dict[int, str] = {}
        for queue, queue_rows in by_queue.items():
            try:
                producer = self._jobs.producer_of(queue)
                producer.send(producer.resume([row.job for row in queue_rows]))
            except BatchEnqueueError as exc:
                for position, row in enumerate(queue_rows):
                    if exc.sent[position] is None:
                        failures[row.id] = exc.failures.get(position, str(exc))
            except CloudjobsError as exc:
                failures.update({row.id: f"{type(exc).__name__}: {exc}" for row in queue_rows})
        return failures

    def _mark_sent(self, connection: Connection, ids: list[int], now: datetime) -> None:
        if not ids:
            return
        table = self._table
        if self._retention <= timedelta(0):
            connection.execute(delete(table).where(table.c.id.in_(ids)))
        else:
            connection.execute(update(table).where(table.c.id.in_(ids)).values(sent_at=now))

    def _mark_failed(self, connection: Connection, row: PendingRow, error: str, now: datetime) -> None:
        attempts = row.attempts + 1
        backoff = min(_RETRY_BASE * 2 ** (attempts - 1), _RETRY_CAP)
        logger.warning(
            "sending job %s to queue %s failed (attempt %d, next in %gs): %s",
            row.job.envelope.id,
            row.queue,
            attempts,
            backoff.total_seconds(),
            error,
            extra={"job_id": row.job.envelope.id, "queue": row.queue},
        )
        table = self._table
        connection.execute(
            update(table)
            .where(table.c.id == row.id)
            .values(attempts=attempts, next_attempt_at=now + backoff, last_error=error[:_MAX_ERROR_LENGTH])
        )

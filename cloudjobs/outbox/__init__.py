"""The transactional outbox: enqueue a job in the same database transaction as the business write.

::

    outbox = Outbox(jobs, engine)  # a SQLAlchemy 2 engine: PostgreSQL or SQLite
    with Session(engine) as session, session.begin():
        session.add(order)
        job_id = outbox.enqueue(session, "confirm-order", payload)

The job is checked and encoded exactly as ``jobs.enqueue`` would do it, and stored as one row of
the caller's transaction: a rollback leaves nothing to send. A relay (``cloudjobs relay app:jobs
--database-url URL``, or :meth:`Outbox.relay`) sends committed rows to their queues. A relay that
dies between a send and its mark sends the row again, under the same job id: make the job
idempotent (``@jobs.job(..., idempotent=True)``) and it runs once. See ``docs/outbox.md``.

Needs the ``outbox`` extra (SQLAlchemy 2, psycopg 3): ``pip install 'cloudjobs[outbox]'``.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("sqlalchemy") is None:  # pragma: no cover - depends on the installation
    raise ImportError(
        "cloudjobs.outbox needs SQLAlchemy 2 (and psycopg 3 for PostgreSQL): pip install 'cloudjobs[outbox]'"
    )

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, Table, insert
from sqlalchemy.orm import Session

from cloudjobs.app import CloudJobs
from cloudjobs.clock import Clock
from cloudjobs.definition import JobHandle
from cloudjobs.errors import ConfigurationError
from cloudjobs.outbox.postgres import PostgresRelayStore, notify
from cloudjobs.outbox.relay import DEFAULT_POLL_INTERVAL, DEFAULT_RETENTION, Relay, RelayReport, RelayStore
from cloudjobs.outbox.rows import values_of
from cloudjobs.outbox.sqlite import SqliteRelayStore
from cloudjobs.outbox.table import DEFAULT_TABLE, outbox_table

__all__ = ["DEFAULT_TABLE", "Outbox", "Relay", "RelayReport", "outbox_table"]

_SQLITE_POLL_INTERVAL = timedelta(seconds=1)


class Outbox:
    """Jobs written in the caller's database transaction, sent by a relay after the commit.

    Args:
        jobs: the app: its job types validate payloads, its queues receive the jobs.
        engine: a SQLAlchemy 2 engine on PostgreSQL (psycopg 3 for notifications) or SQLite.
        table_name: the outbox table's name.
        metadata: the ``MetaData`` to define the table in (your models' own, for Alembic);
            default: a new one, :attr:`metadata`.

    Raises:
        ConfigurationError: the engine is neither PostgreSQL nor SQLite.
    """

    def __init__(
        self,
        jobs: CloudJobs,
        engine: Engine,
        *,
        table_name: str = DEFAULT_TABLE,
        metadata: MetaData | None = None,
    ) -> None:
        if engine.dialect.name not in ("postgresql", "sqlite"):
            raise ConfigurationError(
                f"the outbox runs on PostgreSQL or SQLite, not {engine.dialect.name}", setting="engine"
            )
        self._jobs = jobs
        self._engine = engine
        self.metadata = metadata if metadata is not None else MetaData()
        """The ``MetaData`` holding the table (give it to Alembic as a ``target_metadata``)."""
        self.table: Table = outbox_table(self.metadata, table_name)
        """The outbox table."""

    def create_table(self) -> None:
        """Create the table and its indexes, unless they exist (for apps without migrations)."""
        self.table.create(self._engine, checkfirst=True)

    def enqueue(
        self,
        session: Session | Connection,
        job_type: str | JobHandle[Any, Any],
        payload: Any,
        *,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        queue: str | None = None,
        tenant: str | None = None,
        run_at: datetime | None = None,
        track_status: bool = False,
    ) -> str:
        """Write one job into the outbox in ``session``'s transaction; returns its job id.

        Takes the arguments of :meth:`CloudJobs.enqueue` and checks them the same way, before
        anything is written; the message, its trace context and correlation id are those of this
        call. The job is sent after the transaction commits, never if it rolls back. A delay
        counts from this call, not from the send. A tracked job's pending record
        (``track_status=True``, or status tracking on) is written when the relay sends it. Unique
        jobs (``unique_for``) are not taken: their reservation in the idempotency table cannot join
        the database transaction.

        Raises:
            Everything :meth:`CloudJobs.enqueue` raises before sending (``PayloadValidationError``,
            ``UnknownQueueError``, ``InvalidDelayError``, ...); ``BackendError`` if the queue's
            configuration, read once per process, cannot be read.
            sqlalchemy.exc.SQLAlchemyError: the insert failed.
        """
        share = self._jobs.check_enqueue(
            job_type,
            payload,
            delay=delay,
            idempotency_key=idempotency_key,
            group_id=group_id,
            deduplication_id=deduplication_id,
            queue=queue,
            tenant=tenant,
            run_at=run_at,
            track_status=track_status,
        )
        trace = share.jobs.trace
        try:
            [job] = share.jobs.stored
            session.execute(insert(self.table).values(values_of(share.queue, job)))
            if self._engine.dialect.name == "postgresql":
                connection = session.connection() if isinstance(session, Session) else session
                notify(connection, self.table.name)
        except BaseException as exc:
            trace.finish(exc)
            raise
        trace.finish()
        return job.envelope.id

    def relay(
        self,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        poll_interval: timedelta | None = None,
        clock: Clock | None = None,
    ) -> Relay:
        """A relay for this outbox (call its ``run()``; ``stop()`` ends it).

        Args:
            retention: how long sent rows stay in the table; zero deletes each row once sent.
            poll_interval: the longest wait between two looks at the table (default 5 s on
                PostgreSQL, where commits wake the relay; 1 s on SQLite, reached by backoff).
            clock: the time source of backoff, marks and retention (default: the app's clock).
        """
        store: RelayStore
        if self._engine.dialect.name == "postgresql":
            store = PostgresRelayStore(self._engine, self.table)
            interval = poll_interval or DEFAULT_POLL_INTERVAL
        else:
            store = SqliteRelayStore(self._engine, self.table)
            interval = poll_interval or _SQLITE_POLL_INTERVAL
        return Relay(
            self._jobs,
            self._engine,
            self.table,
            store,
            retention=retention,
            poll_interval=interval,
            clock=clock,
        )

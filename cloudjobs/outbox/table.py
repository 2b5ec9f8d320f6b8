"""The outbox table: one row per job written in the caller's transaction, until the relay sent it.

Define it in your own ``MetaData`` (``outbox_table(Base.metadata)``) for Alembic's autogenerate, or
let :meth:`cloudjobs.outbox.Outbox.create_table` create it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

DEFAULT_TABLE: Final = "cloudjobs_outbox"
"""The table's name unless one is given."""


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC time on every database (SQLite keeps naive text: it is stored as UTC
    and read back as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """UTC, naive on SQLite."""
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Always timezone-aware (UTC)."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def outbox_table(metadata: MetaData, name: str = DEFAULT_TABLE) -> Table:
    """Define the outbox table in ``metadata`` (returns the one already there under ``name``).

    Columns: ``id`` (insertion order), ``job_id``, ``queue`` (the app's queue name), ``group_id``
    (FIFO message group or tenant: rows of one group are sent in ``id`` order), the message as
    checked (``body``, ``attributes``, ``system_attributes`` and ``typed_attributes`` as JSON,
    ``delay_seconds``, ``deduplication_id``, ``send_at``; for a body kept in the payload store,
    ``body`` is the pointer and ``payload_key`` and ``payload`` what is stored when it is sent),
    ``enqueued_at``, the relay's bookkeeping (``attempts``,
    ``next_attempt_at``, ``last_error``) and ``sent_at`` (None until sent).
    """
    if name in metadata.tables:
        return metadata.tables[name]
    table = Table(
        name,
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("job_id", String(128), nullable=False),
        Column("queue", String(80), nullable=False),
        Column("group_id", String(128)),
        Column("body", Text, nullable=False),
        Column("attributes", Text, nullable=False),
        Column("system_attributes", Text, nullable=False),
        Column("typed_attributes", Text, nullable=False),
        Column("payload_key", String(1024)),
        Column("payload", LargeBinary),
        Column("delay_seconds", Float, nullable=False),
        Column("deduplication_id", String(128)),
        Column("send_at", UtcDateTime),
        Column("enqueued_at", UtcDateTime, nullable=False),
        Column("attempts", Integer, nullable=False, default=0),
        Column("next_attempt_at", UtcDateTime),
        Column("last_error", Text),
        Column("sent_at", UtcDateTime),
    )
    # The relay reads unsent rows in id order, and per group; the cleanup reads sent ones by age.
    unsent = table.c.sent_at.is_(None)
    Index(f"{name}_unsent", table.c.id, postgresql_where=unsent, sqlite_where=unsent)
    Index(
        f"{name}_unsent_groups",
        table.c.queue,
        table.c.group_id,
        table.c.id,
        postgresql_where=unsent,
        sqlite_where=unsent,
    )
    Index(f"{name}_sent_at", table.c.sent_at)
    return table

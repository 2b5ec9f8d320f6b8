"""An outbox row and the job it holds: written from a checked job, read back to be sent in order."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import RowMapping

from cloudjobs.backends.base import OutgoingMessage, TypedAttribute
from cloudjobs.envelope import decode
from cloudjobs.producer import StoredJob


def values_of(queue: str, job: StoredJob) -> dict[str, Any]:
    """The column values of the row that keeps ``job`` for the app's queue ``queue``."""
    message = job.message
    return {
        "job_id": job.envelope.id,
        "queue": queue,
        "group_id": message.group_id,
        "body": message.body,
        "attributes": json.dumps(dict(message.attributes), ensure_ascii=False),
        "system_attributes": json.dumps(dict(message.system_attributes), ensure_ascii=False),
        "typed_attributes": json.dumps(
            {name: _typed_json(attribute) for name, attribute in message.typed_attributes.items()}
        ),
        "payload_key": job.upload[0] if job.upload is not None else None,
        "payload": job.upload[1] if job.upload is not None else None,
        "delay_seconds": message.delay.total_seconds(),
        "deduplication_id": message.deduplication_id,
        "send_at": job.send_at,
        "enqueued_at": job.envelope.enqueued_at,
        "attempts": 0,
    }


@dataclass(frozen=True, slots=True)
class PendingRow:
    """An unsent row as the relay reads it.

    Attributes:
        id: the row's id (insertion order).
        queue: the app's queue the job goes to.
        group_id: the message group; rows of one group are sent in ``id`` order.
        attempts: sends that failed so far.
        next_attempt_at: when a failed row may be sent again (None: now).
        job: the job as it was checked at enqueue.
    """

    id: int
    queue: str
    group_id: str | None
    attempts: int
    next_attempt_at: datetime | None
    job: StoredJob

    @classmethod
    def of(cls, row: RowMapping) -> PendingRow:
        """Read a row (its body was encoded by cloudjobs, so it decodes)."""
        message = OutgoingMessage(
            body=row["body"],
            attributes=json.loads(row["attributes"]),
            delay=timedelta(seconds=row["delay_seconds"]),
            group_id=row["group_id"],
            deduplication_id=row["deduplication_id"],
            system_attributes=json.loads(row["system_attributes"]),
            typed_attributes={
                name: _typed_of(value) for name, value in json.loads(row["typed_attributes"]).items()
            },
        )
        upload = (row["payload_key"], bytes(row["payload"])) if row["payload_key"] is not None else None
        # The envelope is the body, or what the body points to.
        envelope = decode(upload[1].decode("utf-8") if upload is not None else row["body"])
        return cls(
            id=row["id"],
            queue=row["queue"],
            group_id=row["group_id"],
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"],
            job=StoredJob(envelope, message, row["send_at"], upload),
        )

    def is_due(self, now: datetime) -> bool:
        """True when the row may be sent at ``now`` (it never failed, or its backoff is over)."""
        return self.next_attempt_at is None or self.next_attempt_at <= now


def _typed_json(attribute: TypedAttribute) -> dict[str, str]:
    if isinstance(attribute.value, bytes):
        return {"type": attribute.data_type, "base64": base64.b64encode(attribute.value).decode("ascii")}
    return {"type": attribute.data_type, "text": attribute.value}


def _typed_of(value: dict[str, str]) -> TypedAttribute:
    if "base64" in value:
        return TypedAttribute(value["type"], base64.b64decode(value["base64"]))
    return TypedAttribute(value["type"], value["text"])


def take_in_order(rows: Iterable[PendingRow], now: datetime, limit: int) -> list[PendingRow]:
    """The rows to send now, at most ``limit``, from ``rows`` in id order.

    A row waiting for its backoff holds back the rest of its group (``queue`` and ``group_id``),
    so a group's rows reach the queue in insertion order; rows without a group wait alone.
    """
    held: set[tuple[str, str]] = set()
    taken: list[PendingRow] = []
    for row in rows:
        group = (row.queue, row.group_id) if row.group_id is not None else None
        if group is not None and group in held:
            continue
        if not row.is_due(now):
            if group is not None:
                held.add(group)
            continue
        taken.append(row)
        if len(taken) == limit:
            break
    return taken

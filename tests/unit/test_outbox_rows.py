"""Which unsent outbox rows a relay sends now: due rows in id order, a group held back by its
earliest row's backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloudjobs.backends.base import OutgoingMessage
from cloudjobs.envelope import Envelope, encode
from cloudjobs.outbox.rows import PendingRow, take_in_order
from cloudjobs.producer import StoredJob

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def row(
    row_id: int, group_id: str | None = None, *, retry_in: float | None = None, queue: str = "default"
) -> PendingRow:
    envelope = Envelope(id=f"job-{row_id}", type="t", payload={}, correlation_id="c", enqueued_at=NOW)
    job = StoredJob(envelope, OutgoingMessage(body=encode(envelope), group_id=group_id))
    next_attempt_at = None if retry_in is None else NOW + timedelta(seconds=retry_in)
    return PendingRow(row_id, queue, group_id, 0 if retry_in is None else 1, next_attempt_at, job)


def ids(rows: list[PendingRow]) -> list[int]:
    return [pending.id for pending in rows]


def test_due_rows_are_taken_in_id_order_up_to_the_limit() -> None:
    rows = [row(1), row(2, "a"), row(3), row(4, "b"), row(5)]

    assert ids(take_in_order(rows, NOW, 4)) == [1, 2, 3, 4]


def test_a_row_in_backoff_holds_back_the_rest_of_its_group_only() -> None:
    rows = [row(1, "a", retry_in=5), row(2, "a"), row(3, "b"), row(4, "a"), row(5)]

    assert ids(take_in_order(rows, NOW, 10)) == [3, 5]


def test_a_row_without_a_group_in_backoff_holds_back_nothing() -> None:
    rows = [row(1, retry_in=5), row(2), row(3)]

    assert ids(take_in_order(rows, NOW, 10)) == [2, 3]


def test_a_row_whose_backoff_is_over_is_due() -> None:
    rows = [row(1, "a", retry_in=0), row(2, "a")]

    assert ids(take_in_order(rows, NOW, 10)) == [1, 2]


def test_groups_of_the_same_name_on_two_queues_are_two_groups() -> None:
    rows = [row(1, "a", retry_in=5, queue="default"), row(2, "a", queue="critical")]

    assert ids(take_in_order(rows, NOW, 10)) == [2]

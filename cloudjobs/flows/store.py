"""The flow store protocol and its answers, and how an app's idempotency store provides one.

A flow lives on its parent's record (the parent's status record, in the same table), so that
``jobs.status(parent_id)`` reads its children's counts with no other request. Three writes make it::

    create         once, before anything is sent: the parent's pending record with the flow
    finish_child   after each child's record is final: its id added to the finished ones, once
    open           each parent message, before the parent runs: the gate only one message passes
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from pydantic import JsonValue

from cloudjobs.flows.definition import FlowRecord, OnChildFailure
from cloudjobs.idempotency.base import Status


@dataclass(frozen=True, slots=True)
class FlowState:
    """A flow as one write left it.

    Attributes:
        key: the parent's store key.
        parent_id: the parent's job id.
        parent_type: its job type.
        parent_payload: its payload.
        parent_queue: its queue.
        parent_status: its record's status.
        member_of: the outer flow's parent key, when this parent is itself a child.
        total: children in the flow.
        finished: children finished (completed or failed).
        failed: children failed.
        children: child id → record key.
        on_child_failure: the rule.
        deadline: when the parent stops waiting.
        opened_by: the route of the parent message that passed the gate, if one did.
    """

    key: str
    parent_id: str
    parent_type: str
    parent_payload: JsonValue
    parent_queue: str
    parent_status: Status
    member_of: str | None
    total: int
    finished: int
    failed: int
    children: Mapping[str, str]
    on_child_failure: OnChildFailure
    deadline: datetime
    opened_by: str | None

    def is_ready(self, now: datetime) -> bool:
        """True when the parent may run (or fail): every child finished, a child failed under the
        ``"fail"`` rule, or the deadline passed."""
        return (
            self.finished >= self.total
            or (self.failed > 0 and self.on_child_failure is OnChildFailure.FAIL)
            or self.deadline <= now
        )


@dataclass(frozen=True, slots=True)
class Opened:
    """This parent message passed the gate (or had passed it before: a redelivery)."""

    state: FlowState


@dataclass(frozen=True, slots=True)
class OpenedElsewhere:
    """The parent's other message passed the gate: this one must not run the parent."""

    state: FlowState


@dataclass(frozen=True, slots=True)
class NotReady:
    """Children are still running and the deadline has not come."""

    deadline: datetime


GateAnswer = Opened | OpenedElsewhere | NotReady
"""Everything :meth:`FlowStore.open` can answer (None: no flow record)."""


@runtime_checkable
class FlowStore(Protocol):
    """Flows on parents' records. Every method may raise
    :class:`~cloudjobs.errors.IdempotencyStoreError`."""

    def create(self, flow: FlowRecord, *, retention: timedelta) -> None:
        """Write the parent's pending record with its flow (refused when a live record exists).

        Raises:
            IdempotencyStoreError: the record exists already, or the store refused the write.
        """
        ...

    def finish_child(self, key: str, child_id: str, *, failed: bool) -> FlowState | None:
        """Count ``child_id`` as finished, once however often it is called; the flow after it
        (or as found, when the child was counted before); None when there is no flow record."""
        ...

    def open(self, key: str, route: str, *, now: datetime, is_redrive: bool) -> GateAnswer | None:
        """Let the parent message of ``route`` through when the flow is ready and no message of the
        other route passed before (a redrive passes whatever the route); None without a record."""
        ...

    def fail_parent(self, key: str, error: str, *, is_redrive: bool) -> bool:
        """Mark a parent that goes to the dead-letter queue without running (``child_failed``), unless
        a run or another copy of its message settled it first (a redrive may mark it again); True
        when this call marked it: only that copy dead-letters the parent."""
        ...

    def results(self, children: Mapping[str, str]) -> dict[str, JsonValue]:
        """Child id → result of every completed child (strongly consistent reads)."""
        ...


@runtime_checkable
class KeepsFlows(Protocol):
    """An idempotency store that keeps flows on its records (the memory and DynamoDB stores)."""

    @property
    def flows(self) -> FlowStore:
        """The flow store over the same records."""
        ...

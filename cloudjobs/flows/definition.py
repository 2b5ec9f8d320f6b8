"""What a flow is made of: the rule for failed children, nested flows, limits and the flow's record.

A flow is a parent job that runs once its children finished, with their results
(``job.child_results()``). See docs/flows.md for the guarantees and :mod:`cloudjobs.flows.create`
for the order of writes and sends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import JsonValue

from cloudjobs.flows.rules import OnChildFailure as OnChildFailure

if TYPE_CHECKING:
    from cloudjobs.definition import JobHandle

MAX_FLOW_CHILDREN: Final = 1000
"""The most children one flow holds. The flow lives on its parent's record, one DynamoDB item of at
most 400 KB, which keeps every child's id with its record key (about 100 bytes each, more with long
job types) and the ids of the finished ones (about 40 bytes each), beside the parent's payload and
status; 1,000 children leave room for a parent payload of 200 KB. Nest flows for more.
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html"""
MAX_PARENT_PAYLOAD_BYTES: Final = 200_000
"""The largest parent payload (its JSON) a flow keeps on its record, to send the parent early."""
DEFAULT_FLOW_TIMEOUT: Final = timedelta(hours=1)
"""How long a parent waits for its children unless ``timeout=`` says otherwise."""

TIMEOUT_ROUTE: Final = "timeout"
"""The parent message sent at the flow's creation, due when the flow times out."""
EARLY_ROUTE: Final = "early"
"""The parent message sent by the child that finished the flow."""


JobSpec = tuple["str | JobHandle[Any, Any]", Any]
"""A job of a flow: ``(job type or handle, payload)``."""


@dataclass(frozen=True, slots=True)
class SubFlow:
    """A child that is itself a flow's parent (made by :func:`subflow`): the outer parent waits for
    the inner parent, which waits for its own children."""

    parent: JobSpec
    children: Sequence[JobSpec | SubFlow]
    on_child_failure: OnChildFailure | Literal["fail", "ignore"] = OnChildFailure.FAIL
    timeout: timedelta | float | None = None


def subflow(
    parent: JobSpec,
    children: Sequence[JobSpec | SubFlow],
    *,
    on_child_failure: OnChildFailure | Literal["fail", "ignore"] = OnChildFailure.FAIL,
    timeout: timedelta | float | None = None,
) -> SubFlow:
    """A nested flow, to pass among the children of ``jobs.flow(...)``; arguments as there."""
    return SubFlow(parent, tuple(children), on_child_failure, timeout)


@dataclass(frozen=True, slots=True)
class Flow:
    """A flow as created by ``jobs.flow(...)``.

    Attributes:
        parent_id: the parent's job id (``jobs.status(parent_id)`` shows its children's counts).
        child_ids: the children's job ids, in the order given.
        subflows: the nested flows among the children, by the child id of their parent.
    """

    parent_id: str
    child_ids: tuple[str, ...]
    subflows: Mapping[str, Flow] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """A flow as its store keeps it, on the parent's record.

    Attributes:
        key: the parent's store key (its record's key).
        parent_id: the parent's job id.
        parent_type: its job type.
        parent_payload: its payload (JSON values), to send it early.
        parent_queue: the app's queue it goes to.
        payload_hash: the hash its consumer compares (:func:`~cloudjobs.idempotency.base.payload_hash`).
        member_of: the store key of the outer flow's parent, when this parent is itself a child.
        children: child job id → the store key of its record.
        on_child_failure: the rule for failed children.
        deadline: when the parent stops waiting.
    """

    key: str
    parent_id: str
    parent_type: str
    parent_payload: JsonValue
    parent_queue: str
    payload_hash: str
    member_of: str | None
    children: Mapping[str, str]
    on_child_failure: OnChildFailure
    deadline: datetime

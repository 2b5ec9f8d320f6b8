"""Creating a flow: plan every job, write the flows' records, send the parents, then the children.

The order, and why:

1. **Check** every message (payloads, sizes, queues) before anything is written or sent.
2. **Write** each flow's record (its parent's pending record, with the children's ids): a child
   that finishes at once finds the flow to count itself in.
3. **Send each parent** under its job id, due at the flow's timeout (the ``timeout`` route): if
   anything later fails, or a child's message is lost to SQS's own redrive, the parent still
   comes, at the timeout, and follows its failure rule. The child that finishes the flow sends the
   parent's ``early`` message; only one of the two passes the gate.
4. **Send the children**, in batches of ten, each with its pending record written first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from cloudjobs.definition import as_timedelta
from cloudjobs.errors import FlowTooLargeError, InvalidFlowError
from cloudjobs.flows.definition import (
    DEFAULT_FLOW_TIMEOUT,
    MAX_FLOW_CHILDREN,
    MAX_PARENT_PAYLOAD_BYTES,
    TIMEOUT_ROUTE,
    Flow,
    FlowRecord,
    JobSpec,
    OnChildFailure,
    SubFlow,
)
from cloudjobs.flows.store import FlowStore
from cloudjobs.idempotency.base import payload_hash
from cloudjobs.ids import random_id
from cloudjobs.producer import EnqueueRequest
from cloudjobs.sending import QueueShare


@dataclass(slots=True)
class FlowSender:
    """What creating a flow needs of the app.

    Attributes:
        build: builds one job's request (``RequestBuilder.build``).
        record_key: the store key of the record a request's job keeps under a job id.
        check: checks requests and groups them by queue, before anything is sent.
        send: sends checked requests (pending records first).
        store: the flow store.
        now: the current time.
        retention: how long records are kept (a flow's timeout must be shorter).
    """

    build: Callable[..., EnqueueRequest]
    record_key: Callable[[EnqueueRequest, str], str | None]
    check: Callable[[Sequence[EnqueueRequest]], list[QueueShare]]
    send: Callable[[list[QueueShare]], list[str]]
    store: FlowStore
    now: Callable[[], datetime]
    retention: timedelta


@dataclass(slots=True)
class _Plan:
    records: list[FlowRecord] = field(default_factory=list)
    parents: list[EnqueueRequest] = field(default_factory=list)
    leaves: list[EnqueueRequest] = field(default_factory=list)


def create_flow(sender: FlowSender, spec: SubFlow) -> Flow:
    """Create the flow ``spec`` describes (see the module docstring for the order).

    Raises:
        InvalidFlowError: no children, an unknown rule, a timeout out of range, or a parent payload
            too large to keep on the flow's record.
        FlowTooLargeError: more than :data:`MAX_FLOW_CHILDREN` children in one flow.
        IdempotencyStoreError: a flow's record could not be written (nothing was sent).
        Everything ``jobs.enqueue`` raises for a job's message.
    """
    plan = _Plan()
    flow = _plan(sender, spec, plan, member_of=None, now=sender.now())
    parents, leaves = sender.check(plan.parents), sender.check(plan.leaves)
    for record in plan.records:
        sender.store.create(record, retention=sender.retention)
    sender.send(parents)
    sender.send(leaves)
    return flow


def _plan(sender: FlowSender, spec: SubFlow, plan: _Plan, *, member_of: str | None, now: datetime) -> Flow:
    parent_type, parent_payload = spec.parent
    parent = sender.build(parent_type, parent_payload, track_status=True)
    name = parent.job_type
    rule = _rule_of(spec.on_child_failure, name)
    timeout = _timeout_of(spec.timeout, name, sender.retention)
    if not spec.children:
        raise InvalidFlowError(
            "a flow needs at least one child (enqueue the parent alone)", job_name=name, setting="children"
        )
    if len(spec.children) > MAX_FLOW_CHILDREN:
        raise FlowTooLargeError(job_name=name, children=len(spec.children), limit=MAX_FLOW_CHILDREN)
    if len(json.dumps(parent.payload).encode()) > MAX_PARENT_PAYLOAD_BYTES:
        raise InvalidFlowError(
            f"the parent's payload is over {MAX_PARENT_PAYLOAD_BYTES} bytes of JSON",
            job_name=name,
            setting="parent",
        )
    parent_id = random_id()
    parent = replace(
        parent, job_id=parent_id, run_at=now + timeout, flow_route=TIMEOUT_ROUTE, flow_parent=member_of
    )
    parent_key = sender.record_key(parent, parent_id)
    assert parent_key is not None  # tracked: it keeps a record
    record_index = len(plan.records)
    plan.parents.append(parent)
    children: dict[str, str] = {}
    subflows: dict[str, Flow] = {}
    for child in spec.children:
        if isinstance(child, SubFlow):
            nested = _plan(sender, child, plan, member_of=parent_key, now=now)
            children[nested.parent_id] = _key_of(plan, nested.parent_id)
            subflows[nested.parent_id] = nested
            continue
        child_type, child_payload = _job_spec(child, name)
        child_id = random_id()
        request = replace(
            sender.build(child_type, child_payload, track_status=True),
            job_id=child_id,
            flow_parent=parent_key,
        )
        child_key = sender.record_key(request, child_id)
        assert child_key is not None
        children[child_id] = child_key
        plan.leaves.append(request)
    plan.records.insert(
        record_index,
        FlowRecord(
            key=parent_key,
            parent_id=parent_id,
            parent_type=name,
            parent_payload=parent.payload,
            parent_queue=parent.queue,
            payload_hash=payload_hash(name, parent.payload),
            member_of=member_of,
            children=children,
            on_child_failure=rule,
            deadline=now + timeout,
        ),
    )
    return Flow(parent_id=parent_id, child_ids=tuple(children), subflows=subflows)


def _key_of(plan: _Plan, parent_id: str) -> str:
    return next(record.key for record in plan.records if record.parent_id == parent_id)


def _job_spec(child: Any, parent: str) -> JobSpec:
    if isinstance(child, tuple) and len(child) == 2:
        return child[0], child[1]
    raise InvalidFlowError(
        f"a child is a (job type, payload) pair or a subflow(...), not {child!r}",
        job_name=parent,
        setting="children",
    )


def _rule_of(rule: str, parent: str) -> OnChildFailure:
    try:
        return OnChildFailure(rule)
    except ValueError:
        raise InvalidFlowError(
            f"on_child_failure is 'fail' or 'ignore', not {rule!r}",
            job_name=parent,
            setting="on_child_failure",
        ) from None


def _timeout_of(timeout: timedelta | float | None, parent: str, retention: timedelta) -> timedelta:
    value = as_timedelta(timeout, name="timeout") if timeout is not None else DEFAULT_FLOW_TIMEOUT
    assert value is not None
    if not timedelta(seconds=1) <= value < retention:
        raise InvalidFlowError(
            f"timeout is 1 s to less than the records' retention ({retention}), not {value}",
            job_name=parent,
            setting="timeout",
        )
    return value

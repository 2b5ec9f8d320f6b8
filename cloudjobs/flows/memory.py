"""MemoryFlowStore: flows on the memory store's records, with the DynamoDB store's semantics."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from pydantic import JsonValue

from cloudjobs.clock import Clock
from cloudjobs.errors import IdempotencyStoreError
from cloudjobs.flows.definition import FlowRecord
from cloudjobs.flows.store import FlowState, GateAnswer, NotReady, Opened, OpenedElsewhere
from cloudjobs.idempotency.base import ChildCounts, Record, Status, decode_result


@dataclasses.dataclass(slots=True)
class _Flow:
    record: FlowRecord
    seen: set[str] = dataclasses.field(default_factory=set)
    failed: set[str] = dataclasses.field(default_factory=set)
    opened_by: str | None = None


class MemoryFlowStore:
    """Flows kept beside a :class:`~cloudjobs.idempotency.memory.MemoryIdempotencyStore`'s records,
    under its lock; each write also updates the parent record's children counts.

    Args:
        records: the store's records, by key (shared, guarded by ``lock``).
        lock: the store's lock.
        on_change: called under the lock after each write (wakes ``jobs.result`` waiters).
        clock: the store's clock.
    """

    def __init__(
        self,
        *,
        records: dict[str, Record],
        lock: threading.Lock,
        on_change: Callable[[], None],
        clock: Clock,
    ) -> None:
        self._records = records
        self._lock = lock
        self._on_change = on_change
        self._clock = clock
        self._flows: dict[str, _Flow] = {}
        self.requests = 0

    def create(self, flow: FlowRecord, *, retention: timedelta) -> None:
        """Write the parent's pending record with its flow; see :meth:`FlowStore.create`."""
        with self._lock:
            self.requests += 1
            now = self._clock.now()
            old = self._records.get(flow.key)
            if old is not None and old.expires_at >= now:
                raise IdempotencyStoreError("a record under the flow parent's key exists", key=flow.key)
            self._records[flow.key] = Record(
                key=flow.key,
                job_id=flow.parent_id,
                job_type=flow.parent_type,
                status=Status.PENDING,
                payload_hash=flow.payload_hash,
                attempts=0,
                created_at=now,
                updated_at=now,
                expires_at=now + retention,
                children=ChildCounts(
                    total=len(flow.children), succeeded=0, failed=0, child_ids=tuple(flow.children)
                ),
            )
            self._flows[flow.key] = _Flow(flow)
            self._on_change()

    def finish_child(self, key: str, child_id: str, *, failed: bool) -> FlowState | None:
        """Count a child once; see :meth:`FlowStore.finish_child`."""
        with self._lock:
            self.requests += 1
            flow = self._flows.get(key)
            record = self._records.get(key)
            if flow is None or record is None:
                return None
            if child_id not in flow.seen:
                flow.seen.add(child_id)
                if failed:
                    flow.failed.add(child_id)
                total = len(flow.record.children)
                counts = ChildCounts(
                    total=total,
                    succeeded=len(flow.seen) - len(flow.failed),
                    failed=len(flow.failed),
                    child_ids=tuple(flow.record.children),
                )
                self._records[key] = dataclasses.replace(record, children=counts)
                self._on_change()
            return self._state(flow)

    def open(self, key: str, route: str, *, now: datetime, is_redrive: bool) -> GateAnswer | None:
        """The gate; see :meth:`FlowStore.open`."""
        with self._lock:
            self.requests += 1
            flow = self._flows.get(key)
            if flow is None or key not in self._records:
                return None
            state = self._state(flow)
            if is_redrive:
                return Opened(state)
            if flow.opened_by is not None and flow.opened_by != route:
                return OpenedElsewhere(state)
            if not state.is_ready(now):
                return NotReady(state.deadline)
            flow.opened_by = route
            return Opened(dataclasses.replace(state, opened_by=route))

    def fail_parent(self, key: str, error: str, *, is_redrive: bool) -> bool:
        """Mark a parent dead-lettered without a run; see :meth:`FlowStore.fail_parent`."""
        markable = {Status.PENDING, Status.RETRYING} | ({Status.DEAD_LETTERED} if is_redrive else set())
        with self._lock:
            self.requests += 1
            record = self._records.get(key)
            if record is None or record.status not in markable:
                return False
            now = self._clock.now()
            self._records[key] = dataclasses.replace(
                record, status=Status.DEAD_LETTERED, error=error, updated_at=now
            )
            self._on_change()
            return True

    def results(self, children: Mapping[str, str]) -> dict[str, JsonValue]:
        """Child id → result of each completed child; see :meth:`FlowStore.results`."""
        with self._lock:
            self.requests += 1
            found: dict[str, JsonValue] = {}
            now = self._clock.now()
            for child_id, child_key in children.items():
                record = self._records.get(child_key)
                if record is not None and record.status is Status.COMPLETED and record.expires_at >= now:
                    found[child_id] = decode_result(record.result)
            return found

    def _state(self, flow: _Flow) -> FlowState:
        record = self._records[flow.record.key]
        return FlowState(
            key=flow.record.key,
            parent_id=flow.record.parent_id,
            parent_type=flow.record.parent_type,
            parent_payload=flow.record.parent_payload,
            parent_queue=flow.record.parent_queue,
            parent_status=record.status,
            member_of=flow.record.member_of,
            total=len(flow.record.children),
            finished=len(flow.seen),
            failed=len(flow.failed),
            children=flow.record.children,
            on_child_failure=flow.record.on_child_failure,
            deadline=flow.record.deadline,
            opened_by=flow.opened_by,
        )

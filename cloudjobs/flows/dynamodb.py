"""DynamoDbFlowStore: flows on the parent's item in the idempotency table.

The flow's attributes sit beside the parent's record (``flow_*``; older workers ignore them):

- ``flow_total``, ``flow_done``, ``flow_failed_count`` (numbers) and ``flow_seen``, ``flow_failed``
  (string sets of child ids). A child is counted by one UpdateItem that ADDs its id to ``flow_seen``
  and 1 to ``flow_done`` under the condition that the set does not hold it yet, so a child that
  finishes twice (a redelivery, a re-run in the crash window) counts once, and the counters always
  equal the sets' sizes.
- ``flow_children`` (a map: child id → its record's key), ``flow_rule``, ``flow_deadline``, the
  parent's payload and queue (``flow_parent_payload``, ``flow_parent_queue``) to send it early, and
  ``flow_member_of`` when the parent is itself a child of an outer flow.
- ``flow_opened_by``: the route (``timeout`` or ``early``) of the parent message that passed the gate.

Every write is billed by the item's size (1 write unit per KB, the larger of before and after): a
flow's item grows with its children (see docs/flows.md for the figures).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from pydantic import JsonValue

from cloudjobs.flows.definition import FlowRecord, OnChildFailure
from cloudjobs.flows.store import FlowState, GateAnswer, NotReady, Opened, OpenedElsewhere
from cloudjobs.idempotency.base import Status, decode_result
from cloudjobs.idempotency.dynamodb_items import (
    ConditionFailedError,
    time_of,
    time_value,
    ttl_value,
    utc_now,
    wrap_dynamodb_errors,
)
from cloudjobs.idempotency.dynamodb_schema import (
    TABLE_JOB_ID_ATTRIBUTE,
    TABLE_PARTITION_KEY,
    TABLE_TTL_ATTRIBUTE,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, KeysAndAttributesTypeDef

_BATCH_GET_LIMIT: Final = 100
"""Keys per BatchGetItem. https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html"""

_NAMES: Final = {
    "#pk": TABLE_PARTITION_KEY,
    "#status": "status",
    "#error": "error",
    "#updated_at": "updated_at",
    "#result": "result",
    "#expires_at": TABLE_TTL_ATTRIBUTE,
    "#total": "flow_total",
    "#done": "flow_done",
    "#failed_count": "flow_failed_count",
    "#seen": "flow_seen",
    "#failed": "flow_failed",
    "#rule": "flow_rule",
    "#deadline": "flow_deadline",
    "#opened_by": "flow_opened_by",
}


def _names(*names: str) -> dict[str, str]:
    """Exactly the placeholders an expression uses (DynamoDB rejects unused ones)."""
    return {name: _NAMES[name] for name in names}


class DynamoDbFlowStore:
    """Flows on the idempotency table (see the module docstring).

    Args:
        table: the table's name.
        client: the idempotency store's client, built on first use.
    """

    def __init__(self, table: str, *, client: Callable[[], DynamoDBClient]) -> None:
        self.table = table
        self._client = client

    def create(self, flow: FlowRecord, *, retention: timedelta) -> None:
        """One conditional PutItem: the parent's pending record with its flow (see
        :meth:`FlowStore.create`)."""
        now = utc_now()
        item: dict[str, AttributeValueTypeDef] = {
            TABLE_PARTITION_KEY: {"S": flow.key},
            TABLE_JOB_ID_ATTRIBUTE: {"S": flow.parent_id},
            "job_type": {"S": flow.parent_type},
            "status": {"S": Status.PENDING.value},
            "payload_hash": {"S": flow.payload_hash},
            "attempts": {"N": "0"},
            "created_at": time_value(now),
            "updated_at": time_value(now),
            TABLE_TTL_ATTRIBUTE: ttl_value(now + retention),
            "flow_total": {"N": str(len(flow.children))},
            "flow_done": {"N": "0"},
            "flow_failed_count": {"N": "0"},
            "flow_children": {"M": {child: {"S": key} for child, key in flow.children.items()}},
            "flow_rule": {"S": flow.on_child_failure.value},
            "flow_deadline": time_value(flow.deadline),
            "flow_parent_payload": {"S": json.dumps(flow.parent_payload, separators=(",", ":"))},
            "flow_parent_queue": {"S": flow.parent_queue},
        }
        if flow.member_of is not None:
            item["flow_member_of"] = {"S": flow.member_of}
        with wrap_dynamodb_errors(self.table, flow.key):
            self._client().put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(#pk) OR #expires_at < :now",
                ExpressionAttributeNames=_names("#pk", "#expires_at"),
                ExpressionAttributeValues={":now": ttl_value(now)},
            )

    def finish_child(self, key: str, child_id: str, *, failed: bool) -> FlowState | None:
        """One conditional UpdateItem (ADD to a set, refused when the id is in it already); see
        :meth:`FlowStore.finish_child`."""
        update = "ADD #seen :child_set, #done :one"
        names = ["#total", "#seen", "#done"]
        if failed:
            update += ", #failed :child_set, #failed_count :one"
            names += ["#failed", "#failed_count"]
        try:
            with wrap_dynamodb_errors(self.table, key):
                response = self._client().update_item(
                    TableName=self.table,
                    Key={TABLE_PARTITION_KEY: {"S": key}},
                    UpdateExpression=update,
                    # Named parts: the flow exists, and this child was not counted yet.
                    ConditionExpression="attribute_exists(#total) AND NOT contains(#seen, :child)",
                    ExpressionAttributeNames=_names(*names),
                    ExpressionAttributeValues={
                        ":child_set": {"SS": [child_id]},
                        ":child": {"S": child_id},
                        ":one": {"N": "1"},
                    },
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ConditionFailedError as refused:
            # Counted before (a redelivery): the flow as it is, so the caller may re-send the parent.
            return _state_of(refused.item) if refused.item else None
        return _state_of(response.get("Attributes", {}))

    def open(self, key: str, route: str, *, now: datetime, is_redrive: bool) -> GateAnswer | None:
        """One conditional UpdateItem (a GetItem for a redrive); see :meth:`FlowStore.open`."""
        client = self._client()
        if is_redrive:
            with wrap_dynamodb_errors(self.table, key):
                got = client.get_item(
                    TableName=self.table, Key={TABLE_PARTITION_KEY: {"S": key}}, ConsistentRead=True
                )
            state = _state_of(got.get("Item", {}))
            return Opened(state) if state is not None else None
        is_free = "(attribute_not_exists(#opened_by) OR #opened_by = :route)"
        is_ready = "(#done >= #total OR (#rule = :fail AND #failed_count > :zero) OR #deadline <= :now)"
        try:
            with wrap_dynamodb_errors(self.table, key):
                response = client.update_item(
                    TableName=self.table,
                    Key={TABLE_PARTITION_KEY: {"S": key}},
                    UpdateExpression="SET #opened_by = :route",
                    ConditionExpression=f"attribute_exists(#total) AND {is_free} AND {is_ready}",
                    ExpressionAttributeNames=_names(
                        "#opened_by", "#done", "#total", "#rule", "#failed_count", "#deadline"
                    ),
                    ExpressionAttributeValues={
                        ":route": {"S": route},
                        ":fail": {"S": OnChildFailure.FAIL.value},
                        ":zero": {"N": "0"},
                        ":now": time_value(now),
                    },
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ConditionFailedError as refused:
            old = _state_of(refused.item) if refused.item else None
            if old is None:
                return None
            if old.opened_by is not None and old.opened_by != route:
                return OpenedElsewhere(old)
            return NotReady(old.deadline)
        opened = _state_of(response.get("Attributes", {}))
        return Opened(opened) if opened is not None else None

    def fail_parent(self, key: str, error: str, *, is_redrive: bool) -> bool:
        """One conditional UpdateItem; see :meth:`FlowStore.fail_parent`."""
        markable = "(:pending, :retrying, :dead_lettered)" if is_redrive else "(:pending, :retrying)"
        try:
            with wrap_dynamodb_errors(self.table, key):
                self._client().update_item(
                    TableName=self.table,
                    Key={TABLE_PARTITION_KEY: {"S": key}},
                    UpdateExpression="SET #status = :dead_lettered, #error = :error, #updated_at = :now",
                    ConditionExpression=f"#status IN {markable}",
                    ExpressionAttributeNames=_names("#status", "#error", "#updated_at"),
                    ExpressionAttributeValues={
                        ":dead_lettered": {"S": Status.DEAD_LETTERED.value},
                        ":pending": {"S": Status.PENDING.value},
                        ":retrying": {"S": Status.RETRYING.value},
                        ":error": {"S": error},
                        ":now": time_value(utc_now()),
                    },
                )
        except ConditionFailedError:
            return False  # another copy marked it, or a run holds it: that one settles it
        return True

    def results(self, children: Mapping[str, str]) -> dict[str, JsonValue]:
        """Strongly consistent BatchGetItems, a hundred keys each; see :meth:`FlowStore.results`."""
        by_key = {record_key: child_id for child_id, record_key in children.items()}
        keys = list(by_key)
        found: dict[str, JsonValue] = {}
        now = utc_now()
        client = self._client()
        for start in range(0, len(keys), _BATCH_GET_LIMIT):
            request: dict[str, KeysAndAttributesTypeDef] = {
                self.table: {
                    "Keys": [
                        {TABLE_PARTITION_KEY: {"S": key}} for key in keys[start : start + _BATCH_GET_LIMIT]
                    ],
                    "ConsistentRead": True,
                    "ProjectionExpression": "#pk, #status, #result, #expires_at",
                    "ExpressionAttributeNames": _names("#pk", "#status", "#result", "#expires_at"),
                }
            }
            while request:
                with wrap_dynamodb_errors(self.table, None):
                    response = client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table, []):
                    expires_at = time_of(item.get(TABLE_TTL_ATTRIBUTE))
                    if item.get("status", {}).get("S") != Status.COMPLETED.value:
                        continue
                    if expires_at is not None and expires_at < now:
                        continue
                    child_id = by_key[item[TABLE_PARTITION_KEY]["S"]]
                    found[child_id] = decode_result(item["result"]["S"] if "result" in item else None)
                # Throttled keys come back unprocessed: ask for them again.
                request = dict(response.get("UnprocessedKeys", {}))  # type: ignore[arg-type]
        return found


def _state_of(item: Mapping[str, AttributeValueTypeDef]) -> FlowState | None:
    """The flow on a parent's item, or None when the item holds none."""
    if "flow_total" not in item:
        return None
    member_of = item.get("flow_member_of")
    opened_by = item.get("flow_opened_by")
    deadline = time_of(item.get("flow_deadline"))
    assert deadline is not None
    payload: JsonValue = json.loads(item["flow_parent_payload"]["S"])
    return FlowState(
        key=item[TABLE_PARTITION_KEY]["S"],
        parent_id=item[TABLE_JOB_ID_ATTRIBUTE]["S"],
        parent_type=item["job_type"]["S"],
        parent_payload=payload,
        parent_queue=item["flow_parent_queue"]["S"],
        parent_status=Status(item["status"]["S"]),
        member_of=member_of["S"] if member_of is not None else None,
        total=int(item["flow_total"]["N"]),
        finished=int(item.get("flow_done", {}).get("N", "0")),
        failed=int(item.get("flow_failed_count", {}).get("N", "0")),
        children={child: value["S"] for child, value in item.get("flow_children", {}).get("M", {}).items()},
        on_child_failure=OnChildFailure(item["flow_rule"]["S"]),
        deadline=deadline,
        opened_by=opened_by["S"] if opened_by is not None else None,
    )

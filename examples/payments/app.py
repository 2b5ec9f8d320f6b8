"""Effectively-once charges: an idempotent job whose side effect is itself keyed by the job's key.

cloudjobs runs the handler to completion at most once per key, but a worker that dies between the
side effect and the completion write re-runs the handler (the crash window). So the side effect, a
row in the ``charges`` table, is a conditional write on ``job.idempotency_key``: a re-run finds the
row, changes nothing and returns the first run's receipt.

    CLOUDJOBS_IDEMPOTENCY_TABLE=... PAYMENTS_CHARGES_TABLE=... cloudjobs worker examples.payments.app:jobs
"""

from __future__ import annotations

import os
import uuid
from functools import cache
from typing import TYPE_CHECKING, cast

from pydantic import BaseModel, Field

from cloudjobs import CloudJobs, Job, PermanentError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

jobs = CloudJobs()


class Charge(BaseModel):
    """Charge an order once."""

    order_id: str
    amount_cents: int = Field(gt=0)


class Receipt(BaseModel):
    """What the charge job returns (stored with its record, read back through ``jobs.status``)."""

    order_id: str
    charge_id: str
    amount_cents: int


@cache
def charges_client() -> DynamoDBClient:
    """The DynamoDB client for the charges table (created on first use)."""
    from cloudjobs.aws_clients import create_client

    # create_client, not boto3.client: it also reads AWS_REGION, which botocore alone ignores.
    client: DynamoDBClient = create_client("dynamodb")
    return client


def charges_table() -> str:
    """The table holding one row per charged order key (``PAYMENTS_CHARGES_TABLE``)."""
    return os.environ.get("PAYMENTS_CHARGES_TABLE", "charges")


@jobs.job("charge-order", idempotency_key="order_id", max_attempts=5)
def charge_order(payload: Charge, job: Job) -> Receipt:
    """Record the charge under the job's key; a re-run in the crash window returns the same receipt."""
    key = job.idempotency_key
    if key is None:  # registered with idempotency_key=..., so always set; checked for the type checker
        raise PermanentError("charge-order runs only with an idempotency key")
    client = charges_client()
    charge_id = f"ch_{uuid.uuid4().hex[:16]}"
    try:
        client.put_item(
            TableName=charges_table(),
            Item={
                "charge_key": {"S": key},
                "charge_id": {"S": charge_id},
                "order_id": {"S": payload.order_id},
                "amount_cents": {"N": str(payload.amount_cents)},
                "job_id": {"S": job.id},
            },
            ConditionExpression="attribute_not_exists(charge_key)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except client.exceptions.ConditionalCheckFailedException as exc:
        existing = cast("dict[str, dict[str, str]]", exc.response.get("Item", {}))  # the earlier run's row
        charge_id = existing["charge_id"]["S"]
        if int(existing["amount_cents"]["N"]) != payload.amount_cents:
            raise PermanentError(f"order {payload.order_id} was charged with another amount") from None
    return Receipt(order_id=payload.order_id, charge_id=charge_id, amount_cents=payload.amount_cents)

"""Create the example's two tables (idempotency records and charges) wherever boto3 points.

python -m examples.payments.provision      # prints the variables the worker needs
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudjobs.aws_clients import create_client
from cloudjobs.provisioning import TableSpec, provision_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

JOBS_TABLE = "payments-jobs"
CHARGES_TABLE = "payments-charges"


def provision() -> None:
    """Create both tables if missing (safe to run again)."""
    # create_client, not boto3.client: it also reads AWS_REGION, which botocore alone ignores.
    client: DynamoDBClient = create_client("dynamodb")
    provision_table(TableSpec(JOBS_TABLE), client=client)
    existing = client.list_tables()["TableNames"]
    if CHARGES_TABLE not in existing:
        client.create_table(
            TableName=CHARGES_TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "charge_key", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "charge_key", "KeyType": "HASH"}],
        )
        client.get_waiter("table_exists").wait(TableName=CHARGES_TABLE)
    print(f"CLOUDJOBS_IDEMPOTENCY_TABLE={JOBS_TABLE}")
    print(f"PAYMENTS_CHARGES_TABLE={CHARGES_TABLE}")


if __name__ == "__main__":
    provision()

"""The idempotency and status table's schema: its key, its job-id index and its TTL attribute.

The store owns the table's shape; :mod:`cloudjobs.provisioning` creates the table from this module
(and re-exports the names), and the Terraform module and the local stack use the same names. No AWS
code is imported here, so provisioning a spec stays free of boto3 until it is applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import CreateTableInputTypeDef

TABLE_PARTITION_KEY: Final = "pk"
"""The idempotency/status table's partition key (a string: the idempotency key)."""
TABLE_JOB_ID_INDEX: Final = "job_id-index"
"""The global secondary index that finds a status record by job id."""
TABLE_JOB_ID_ATTRIBUTE: Final = "job_id"
"""The attribute the job-id index is keyed on."""
TABLE_TTL_ATTRIBUTE: Final = "expires_at"
"""The attribute DynamoDB's TTL reads (epoch seconds); expiry is also checked on read."""


def create_table_request(table: str) -> CreateTableInputTypeDef:
    """The CreateTable request for the table named ``table``: on-demand capacity, partition key
    :data:`TABLE_PARTITION_KEY` (S), and a global secondary index :data:`TABLE_JOB_ID_INDEX` on
    :data:`TABLE_JOB_ID_ATTRIBUTE` (S) projecting every attribute. TTL is turned on separately
    (UpdateTimeToLive on :data:`TABLE_TTL_ATTRIBUTE`)."""
    return {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": TABLE_PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": TABLE_JOB_ID_ATTRIBUTE, "AttributeType": "S"},
        ],
        "KeySchema": [{"AttributeName": TABLE_PARTITION_KEY, "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": TABLE_JOB_ID_INDEX,
                "KeySchema": [{"AttributeName": TABLE_JOB_ID_ATTRIBUTE, "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    }

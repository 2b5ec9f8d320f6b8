"""The DynamoDB store's reading of DynamoDB's answers, with a Stubber (no server).

A refused lease write returns the record in its answer; an answer whose record has no known status
(a partial write, another writer's item) must surface as a typed store error, which the consumer
treats as the store being unavailable (fail closed), never as a crash of the worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config
from botocore.stub import ANY, Stubber

from cloudjobs import IdempotencyStoreError
from cloudjobs.idempotency.base import AlreadyCompleted, Claim
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

CLAIM = Claim(key="charge#order-1", job_id="job-1", job_type="charge", payload_hash="hash-1")


@pytest.fixture
def client() -> Iterator[DynamoDBClient]:
    dynamodb: DynamoDBClient = boto3.session.Session().client(
        "dynamodb", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    yield dynamodb
    dynamodb.close()


def _refuse_with(stubber: Stubber, item: dict[str, dict[str, str]]) -> None:
    stubber.add_client_error(
        "update_item",
        service_error_code="ConditionalCheckFailedException",
        service_message="The conditional request failed",
        http_status_code=400,
        modeled_fields={"Item": item},
        expected_params={name: ANY for name in _ACQUIRE_PARAMETERS},
    )


_ACQUIRE_PARAMETERS = (
    "TableName",
    "Key",
    "UpdateExpression",
    "ConditionExpression",
    "ExpressionAttributeNames",
    "ExpressionAttributeValues",
    "ReturnValuesOnConditionCheckFailure",
)


def test_a_refusal_carrying_a_completed_record_answers_already_completed(client: DynamoDBClient) -> None:
    store = DynamoDbIdempotencyStore("jobs", client=client)
    with Stubber(client) as stubber:
        _refuse_with(
            stubber,
            {
                "pk": {"S": CLAIM.key},
                "status": {"S": "completed"},
                "payload_hash": {"S": CLAIM.payload_hash},
                "job_id": {"S": "job-0"},
                "result": {"S": '{"receipt": "r-1"}'},
            },
        )
        answer = store.acquire(CLAIM, lease=timedelta(seconds=30), retention=timedelta(days=1))
    assert answer == AlreadyCompleted(job_id="job-0", result='{"receipt": "r-1"}')


def test_a_refusal_carrying_a_record_without_a_known_status_is_a_typed_store_error(
    client: DynamoDBClient,
) -> None:
    store = DynamoDbIdempotencyStore("jobs", client=client)
    with Stubber(client) as stubber:
        _refuse_with(stubber, {"pk": {"S": CLAIM.key}, "payload_hash": {"S": CLAIM.payload_hash}})
        with pytest.raises(IdempotencyStoreError, match="no known status") as raised:
            store.acquire(CLAIM, lease=timedelta(seconds=30), retention=timedelta(days=1))
    assert raised.value.key == CLAIM.key


def test_the_stores_client_leaves_parameter_checks_to_the_table() -> None:
    # The table validates every request; botocore's own check of each one cost a tenth of a write's
    # client CPU (bench/idempotency.py). A caller's config is merged under the store's.
    store = DynamoDbIdempotencyStore(
        "jobs",
        session=boto3.session.Session(
            region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
        ),
        config=Config(parameter_validation=True),
    )
    client = store.client
    missing_key: dict[str, object] = {"TableName": "jobs", "UpdateExpression": "SET #a = :a"}
    with Stubber(client) as stubber:
        # Without the Key botocore's check would raise ParamValidationError before any request.
        stubber.add_response("update_item", {}, expected_params=missing_key)
        client.update_item(**missing_key)  # type: ignore[arg-type]
        stubber.assert_no_pending_responses()
    client.close()

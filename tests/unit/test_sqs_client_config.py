"""The SQS backend's own client: what it configures, whatever the caller adds."""

from __future__ import annotations

import boto3
from botocore.config import Config
from botocore.stub import Stubber

from cloudjobs.backends.sqs import SqsBackend


def test_the_backends_client_leaves_parameter_checks_to_sqs() -> None:
    # Every request is built by the backend; botocore's own walk of each batch entry and attribute
    # cost ~120 µs per SendMessageBatch of ten. A caller's config is merged under the backend's.
    queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/jobs"
    backend = SqsBackend(
        queue_url=queue_url,
        session=boto3.session.Session(
            region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
        ),
        config=Config(parameter_validation=True),
    )
    client = backend.client
    no_entries: dict[str, object] = {"QueueUrl": queue_url}
    with Stubber(client) as stubber:
        # Without Entries botocore's check would raise ParamValidationError before any request.
        stubber.add_response(
            "send_message_batch", {"Successful": [], "Failed": []}, expected_params=no_entries
        )
        client.send_message_batch(**no_entries)  # type: ignore[arg-type]
        stubber.assert_no_pending_responses()
    client.close()

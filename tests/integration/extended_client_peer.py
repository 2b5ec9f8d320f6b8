"""AWS's SQS extended client (``amazon-sqs-extended-client``) as a peer of cloudjobs, run as its own
process (importing it replaces ``boto3.Session`` process-wide). The endpoint, region and credentials
come from the environment (the test's moto server).

    python -m tests.integration.extended_client_peer send QUEUE_URL BUCKET < body
    python -m tests.integration.extended_client_peer receive QUEUE_URL   # prints the messages as JSON
"""

from __future__ import annotations

import json
import sys
from typing import Any

import boto3
import sqs_extended_client  # noqa: F401  (replaces boto3.Session with the extended client's)


def main(arguments: list[str]) -> int:
    command, queue_url = arguments[0], arguments[1]
    # The extended client's own attributes are set on the client: typed as Any.
    sqs: Any = boto3.session.Session().client("sqs")
    if command == "send":
        sqs.large_payload_support = arguments[2]
        sqs.always_through_s3 = True
        body = sys.stdin.read()
        sent = sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=body,
            MessageAttributes={"origin": {"DataType": "String", "StringValue": "extended-client"}},
        )
        print(json.dumps({"MessageId": sent["MessageId"]}))
        return 0
    if command == "receive":
        sqs.large_payload_support = "unused"  # reading needs no bucket of its own
        sqs.delete_payload_from_s3 = True
        answer = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        )
        messages = answer.get("Messages", [])
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        print(
            json.dumps(
                [{"Body": m["Body"], "MessageAttributes": m.get("MessageAttributes", {})} for m in messages]
            )
        )
        return 0
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

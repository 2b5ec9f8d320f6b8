"""What a payload kept in S3 costs: requests and bytes per message, and time against a hand-written
claim check, both on one moto server (SQS and S3) in the same run.

For each body size, ``--jobs`` jobs are enqueued and then consumed, by:

- **hand-written**: ``put_object`` of the body, ``send_message`` of a pointer; ``receive_message``
  (batches of ten), ``get_object`` per message, ``delete_message_batch``;
- **cloudjobs**: ``jobs.enqueue`` with ``CLOUDJOBS_PAYLOAD_BUCKET`` and a 256 KiB threshold (so
  that both store every body; the same pointer format), then
  the consumer core on receive batches of ten (``get_object`` per message, batched deletes), with
  ``CLOUDJOBS_PAYLOAD_DELETE`` off (the default: bodies expire by the bucket's lifecycle rule).

Every AWS request is counted with a botocore hook, with the bytes of SQS message bodies and S3
objects sent. Reported per message: SQS and S3 requests, bytes on SQS and in S3, and each side's
median time (alternating rounds) with the ratio of cloudjobs to hand-written.

Run: ``python bench/payloads.py`` (``--jobs 20 --rounds 3``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import boto3
import botocore.session

from cloudjobs import CloudJobs, Settings
from cloudjobs.applier import OutcomeApplier
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.clock import SystemClock
from cloudjobs.local import LocalAwsServer, local_environment
from cloudjobs.payloads.pointer import Pointer, size_attribute

SIZES = {"300 KiB": 300 * 1024, "2 MiB": 2 * 1024 * 1024}
THRESHOLD = 256 * 1024
"""Both contenders store every body here (the hand-written one always does): SQS's former limit."""


class Meter:
    """Requests by service and bytes of bodies sent, for every client created while installed."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.sqs_bytes = 0
        self.s3_bytes = 0

    def install(self) -> Callable[[], None]:
        create = botocore.session.Session.create_client
        meter = self

        def created(session: botocore.session.Session, *args: Any, **kwargs: Any) -> Any:
            client = create(session, *args, **kwargs)
            client.meta.events.register("before-parameter-build", meter.record)
            return client

        botocore.session.Session.create_client = created  # type: ignore[method-assign,assignment]
        return lambda: setattr(botocore.session.Session, "create_client", create)

    def record(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.service_id.hyphenize()
        self.requests[service] += 1
        if model.name == "SendMessage":
            self.sqs_bytes += len(params["MessageBody"].encode())
        elif model.name == "SendMessageBatch":
            self.sqs_bytes += sum(len(entry["MessageBody"].encode()) for entry in params["Entries"])
        elif model.name == "PutObject":
            self.s3_bytes += _length(params["Body"])


def _length(body: Any) -> int:
    if isinstance(body, bytes | bytearray):
        return len(body)
    position = body.tell()  # a stream botocore made of the bytes
    body.seek(0, 2)
    length = int(body.tell())
    body.seek(position)
    return length


def hand_written(queue_url: str, bucket: str, body: bytes, jobs: int) -> None:
    session = boto3.session.Session()
    sqs, s3 = session.client("sqs"), session.client("s3")
    for _ in range(jobs):
        key = f"hand/{uuid.uuid4()}"
        s3.put_object(Bucket=bucket, Key=key, Body=body, ServerSideEncryption="AES256")
        attribute = size_attribute(len(body))["ExtendedPayloadSize"]
        sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=Pointer(bucket, key).body(),
            MessageAttributes={
                "ExtendedPayloadSize": {"DataType": "Number", "StringValue": str(attribute.value)}
            },
        )
    done = 0
    while done < jobs:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
        ).get("Messages", [])
        for message in messages:
            _, where = json.loads(message["Body"])
            json.loads(s3.get_object(Bucket=where["s3BucketName"], Key=where["s3Key"])["Body"].read())
        if messages:
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)],
            )
        done += len(messages)


def with_cloudjobs(queue_url: str, bucket: str, body: bytes, jobs: int) -> None:
    app = CloudJobs(
        settings=Settings(
            _env_file=None, queue_url=queue_url, payload_bucket=bucket, payload_threshold_bytes=THRESHOLD
        )
    )
    ran: list[int] = []

    @app.job("export")
    def export(payload: dict[str, Any]) -> None:
        ran.append(1)

    payload = json.loads(body)
    for _ in range(jobs):
        app.enqueue("export", payload)
    backend = app.backend
    assert isinstance(backend, SqsBackend)
    consumer = app.consumer()
    applier = OutcomeApplier(backend, SystemClock())
    while len(ran) < jobs:
        deliveries = backend.receive(max_messages=10, wait=timedelta(seconds=1))
        for delivery in deliveries:
            applier.apply(delivery, consumer.run(delivery))
        applier.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    with LocalAwsServer() as server:
        import os

        os.environ.update(local_environment(server.endpoint_url))
        session = boto3.session.Session()
        sqs, s3 = session.client("sqs"), session.client("s3")
        queue_url = sqs.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        print(f"{options.jobs} jobs per round, {options.rounds} rounds, moto {server.endpoint_url}")
        print(
            f"{'size':>8} {'contender':<13} {'SQS req/msg':>11} {'S3 req/msg':>10} "
            f"{'SQS bytes/msg':>13} {'S3 bytes/msg':>12} {'median s':>9} {'ratio':>6}"
        )
        for label, size in SIZES.items():
            body = json.dumps({"rows": "x" * size}).encode()
            times: dict[str, list[float]] = {"hand-written": [], "cloudjobs": []}
            meters: dict[str, Meter] = {}
            for round_number in range(options.rounds):
                order = [("hand-written", hand_written), ("cloudjobs", with_cloudjobs)]
                for name, run in order if round_number % 2 == 0 else order[::-1]:
                    meter = Meter()
                    uninstall = meter.install()
                    started = time.perf_counter()
                    try:
                        run(queue_url, bucket, body, options.jobs)
                    finally:
                        uninstall()
                    times[name].append(time.perf_counter() - started)
                    meters[name] = meter
            base = statistics.median(times["hand-written"])
            for name in ("hand-written", "cloudjobs"):
                meter, median = meters[name], statistics.median(times[name])
                print(
                    f"{label:>8} {name:<13} {meter.requests['sqs'] / options.jobs:>11.2f} "
                    f"{meter.requests['s3'] / options.jobs:>10.2f} {meter.sqs_bytes / options.jobs:>13,.0f} "
                    f"{meter.s3_bytes / options.jobs:>12,.0f} {median:>9.3f} {median / base:>6.2f}"
                )


if __name__ == "__main__":
    main()

"""Per-batch overhead of the Lambda handler against a hand-written loop and Powertools, in one run.

The three contenders take the same SQS event of ten records (built from messages received from a
MemoryBackend, so no network is involved) and run a no-op handler on each:

- **hand-written loop**: ``json.loads`` each body, call the no-op with the payload, build
  ``{"batchItemFailures": [...]}`` (reporting a record whose call raised);
- **Powertools**: AWS Lambda Powertools' ``BatchProcessor(event_type=EventType.SQS,
  model=SqsRecordModel)`` with ``process_partial_response`` (each record parsed into its pydantic
  SQS record model, the handler given ``json.loads(record.body)["payload"]``);
- **cloudjobs**: ``jobs.lambda_handler()`` (records → deliveries → consumer core: envelope decode,
  payload validation, job context → outcome → partial batch response).

Rounds alternate between the contenders (the order rotates from round to round); each round times
``--batches`` invocations. Reported: the median per-batch time of each, and its ratios to the
hand-written loop and to Powertools.

Run: ``python bench/lambda_overhead.py`` (``--rounds 15 --batches 2000``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from typing import cast

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel

from cloudjobs import CloudJobs, MemoryBackend, Settings
from cloudjobs.runtimes.lambda_events import (
    BatchItemFailure,
    PartialBatchResponse,
    SqsEvent,
    SqsMessageAttribute,
    SqsRecord,
)

CONTENDERS = ("hand-written loop", "Powertools", "cloudjobs")
RECORDS = 10


class Context:
    """A context with a whole minute ahead: the time budget never binds here."""

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def noop(payload: object) -> None:
    """The job: does nothing."""


def build_event(backend: MemoryBackend) -> SqsEvent:
    """Ten records as the event source mapping would hand them over."""
    deliveries = backend.receive(max_messages=RECORDS, wait=timedelta(0))
    records: list[SqsRecord] = []
    for delivery in deliveries:
        attributes: dict[str, SqsMessageAttribute] = {
            name: {"stringValue": value, "stringListValues": [], "binaryListValues": [], "dataType": "String"}
            for name, value in delivery.attributes.items()
        }
        records.append(
            {
                "messageId": delivery.message_id,
                "receiptHandle": delivery.receipt,
                "body": delivery.body,
                "attributes": {
                    "ApproximateReceiveCount": str(delivery.receive_count),
                    "SentTimestamp": str(int(delivery.sent_at.timestamp() * 1000)),
                    # Always present in Lambda's records; Powertools' model requires them.
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": str(int(delivery.sent_at.timestamp() * 1000)),
                },
                "messageAttributes": attributes,
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{delivery.queue}",
                "awsRegion": "us-east-1",
            }
        )
    return {"Records": records}


def hand_written(event: SqsEvent, context: Context) -> PartialBatchResponse:
    """What one would write without a library: decode, call, report what raised."""
    failures: list[BatchItemFailure] = []
    for record in event["Records"]:
        try:
            noop(json.loads(record["body"])["payload"])
        except Exception:
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


def powertools_handler() -> Callable[[SqsEvent, Context], PartialBatchResponse]:
    """Powertools' batch processor on its SQS record model, as its documentation writes a handler."""
    processor = BatchProcessor(event_type=EventType.SQS, model=SqsRecordModel)

    def record_handler(record: SqsRecordModel) -> None:
        noop(json.loads(cast("str", record.body))["payload"])  # a str: no model is given for the body

    def handler(event: SqsEvent, context: Context) -> PartialBatchResponse:
        response = process_partial_response(
            event=dict(event), record_handler=record_handler, processor=processor, context=None
        )
        return {
            "batchItemFailures": [
                {"itemIdentifier": str(item["itemIdentifier"])} for item in response["batchItemFailures"]
            ]
        }

    return handler


def time_batches(
    handler: Callable[[SqsEvent, Context], PartialBatchResponse], event: SqsEvent, batches: int
) -> float:
    """Seconds per batch over ``batches`` invocations."""
    context = Context()
    start = time.perf_counter()
    for _ in range(batches):
        response = handler(event, context)
    elapsed = time.perf_counter() - start
    assert response == {"batchItemFailures": []}, response
    return elapsed / batches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Lambda handler overhead per batch of ten records")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batches", type=int, default=2000, help="invocations timed per round")
    arguments = parser.parse_args(argv)

    backend = MemoryBackend("bench", max_receive_count=None)
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend)
    jobs.job("noop")(noop)
    jobs.enqueue_many([("noop", {"n": n}) for n in range(RECORDS)])
    event = build_event(backend)
    assert len(event["Records"]) == RECORDS
    lambda_handler = jobs.lambda_handler()
    contenders: dict[str, Callable[[SqsEvent, Context], PartialBatchResponse]] = {
        "hand-written loop": hand_written,
        "Powertools": powertools_handler(),
        "cloudjobs": lambda_handler,
    }
    for handler in contenders.values():  # warm up: first-call work (consumer, caches) is not overhead
        time_batches(handler, event, 50)

    results: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for index in range(arguments.rounds):
        shift = index % len(CONTENDERS)
        order = CONTENDERS[shift:] + CONTENDERS[:shift]
        for name in order:
            results[name].append(time_batches(contenders[name], event, arguments.batches))
    lambda_handler.close()

    medians = {name: statistics.median(results[name]) for name in CONTENDERS}
    baseline, powertools = medians["hand-written loop"], medians["Powertools"]
    print(
        f"Lambda handler overhead: {RECORDS} records per batch, no-op job, MemoryBackend; "
        f"median of {arguments.rounds} rotating rounds of {arguments.batches} batches\n"
    )
    print("| contender | per batch (µs) | per record (µs) | ratio to the loop | ratio to Powertools |")
    print("|---|---|---|---|---|")
    for name, value in medians.items():
        print(
            f"| {name} | {value * 1e6:.1f} | {value * 1e6 / RECORDS:.1f} | {value / baseline:.1f} "
            f"| {value / powertools:.2f} |"
        )
    for name in ("Powertools", "cloudjobs"):
        added = (medians[name] - baseline) * 1e6
        print(f"\n{name} adds {added:.0f} µs per batch ({added / RECORDS:.1f} µs per record) to the loop.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

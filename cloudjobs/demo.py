"""``cloudjobs demo``: real jobs on an embedded local AWS (moto in server mode), no account needed.

It starts the local server on 127.0.0.1, provisions a queue and its DLQ with the same code users run
against AWS, enqueues a mix of jobs (some failing once, some poison), runs a worker until every job
has settled, and prints what happened.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TextIO

from pydantic import BaseModel

from cloudjobs.app import CloudJobs
from cloudjobs.backends.base import MAX_BATCH_ENTRIES, Backend, OutgoingMessage
from cloudjobs.envelope import DEAD_LETTER_ATTRIBUTE
from cloudjobs.errors import PermanentError, RetryableError
from cloudjobs.job import Job
from cloudjobs.settings import SettingsModel
from cloudjobs.settings_sources import Settings

_SETTLE_TIMEOUT = 90.0


class SendEmail(BaseModel):
    """Payload of the demo's ``send-email`` job."""

    to: str
    subject: str


class Webhook(BaseModel):
    """Payload of the demo's ``deliver-webhook`` job: fails ``failures`` times first."""

    url: str
    failures: int = 0


class Charge(BaseModel):
    """Payload of the demo's ``charge-card`` job."""

    order_id: str
    amount_cents: int


def build_demo_jobs(settings: SettingsModel) -> CloudJobs:
    """The demo's job registry, on the queue named by ``settings``."""
    jobs = CloudJobs(settings=settings)

    @jobs.job("send-email", timeout=10)
    def send_email(payload: SendEmail, job: Job) -> dict[str, str]:
        return {"delivered_to": payload.to, "job": job.id}

    @jobs.job("deliver-webhook", max_attempts=4, timeout=10)
    def deliver_webhook(payload: Webhook, job: Job) -> dict[str, int]:
        if job.attempt <= payload.failures:
            raise RetryableError(f"{payload.url} answered 503", delay=1)
        return {"attempts": job.attempt}

    @jobs.job("charge-card", timeout=10)
    def charge_card(payload: Charge) -> dict[str, str]:
        if payload.amount_cents <= 0:
            raise PermanentError(f"order {payload.order_id}: amount must be positive")
        return {"charged": payload.order_id}

    return jobs


@dataclass(slots=True)
class DemoReport:
    """What the demo saw."""

    enqueued: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    dead_letters: list[dict[str, object]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def is_as_expected(self) -> bool:
        """True when every good job completed and exactly the three poison messages were dead-lettered."""
        return (
            self.counts.get("completed", 0) == 8
            and self.counts.get("dead_lettered", 0) == 3
            and len(self.dead_letters) == 3
        )


def run_demo(out: TextIO = sys.stdout) -> DemoReport:
    """Run the demo end to end against an embedded moto server; print and return the report."""
    from cloudjobs.backends.sqs import SqsBackend
    from cloudjobs.local import LocalAwsServer, local_environment
    from cloudjobs.provisioning import QueueSpec, provision_queue

    started = time.monotonic()
    with LocalAwsServer() as server:
        os.environ.update(local_environment(server.endpoint_url))
        out.write(f"local AWS (moto server) on {server.endpoint_url}\n")
        from cloudjobs.aws_clients import create_client

        client = create_client("sqs")
        try:
            queue = provision_queue(
                QueueSpec(name="cloudjobs-demo", visibility_timeout_seconds=10, max_receive_count=5),
                client=client,
            )
        finally:
            client.close()
        out.write(f"provisioned {queue.queue_url}\n        and {queue.dlq_url} (redrive after 5 receives)\n")
        settings = Settings(
            queue_url=queue.queue_url,
            wait_time_seconds=1,
            concurrency=4,
            backoff_base_seconds=1,
            backoff_cap_seconds=2,
            shutdown_timeout_seconds=10,
        )
        jobs = build_demo_jobs(settings)
        report = DemoReport()
        report.enqueued = _enqueue_samples(jobs)
        out.write(f"enqueued {report.enqueued} messages (3 of them poison); running a worker...\n")
        worker = jobs.worker()
        thread = threading.Thread(target=worker.run, name="demo-worker")
        thread.start()
        deadline = time.monotonic() + _SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            counts = worker.counts
            if counts["completed"] >= 8 and counts["dead_lettered"] >= 3:
                break
            time.sleep(0.2)
        worker.stop()
        thread.join()
        report.counts = dict(worker.counts)
        dlq = SqsBackend(queue_url=queue.dlq_url, wait_time_seconds=1)
        report.dead_letters = _read_dead_letters(dlq)
    report.seconds = time.monotonic() - started
    _print_report(report, out)
    return report


def _enqueue_samples(jobs: CloudJobs) -> int:
    ids = jobs.enqueue_many(
        [("send-email", SendEmail(to=f"user{n}@example.com", subject="Welcome")) for n in range(5)]
        + [
            ("deliver-webhook", Webhook(url="https://hooks.example.com/a", failures=1)),
            ("deliver-webhook", Webhook(url="https://hooks.example.com/b", failures=1)),
            ("charge-card", Charge(order_id="order-1", amount_cents=1999)),
            ("charge-card", Charge(order_id="order-2", amount_cents=-5)),
        ]
    )
    # Two messages no producer of ours would send: a body that is not JSON, and an envelope whose
    # payload fails its schema. Both must end in the DLQ with their reason.
    schema_failure = json.dumps(
        {
            "cloudjobs": 1,
            "id": "bad-payload-1",
            "type": "send-email",
            "payload": {"to": 42},
            "correlation_id": "demo",
            "enqueued_at": "2026-01-01T00:00:00Z",
        }
    )
    jobs.backend.send([OutgoingMessage(body="this is not json"), OutgoingMessage(body=schema_failure)])
    return len(ids) + 2


def _read_dead_letters(dlq: Backend) -> list[dict[str, object]]:
    seen: dict[str, dict[str, object]] = {}
    for _ in range(5):
        deliveries = dlq.receive(max_messages=MAX_BATCH_ENTRIES, wait=timedelta(seconds=1))
        for delivery in deliveries:
            details = json.loads(delivery.attributes.get(DEAD_LETTER_ATTRIBUTE, "{}"))
            seen[delivery.message_id] = {"body": delivery.body[:60], **details}
        if len(seen) >= 3 and not deliveries:
            break
    return list(seen.values())


def _print_report(report: DemoReport, out: TextIO) -> None:
    counts = report.counts
    out.write(
        "\n== cloudjobs demo report ==\n"
        f"messages enqueued : {report.enqueued}\n"
        f"jobs completed    : {counts.get('completed', 0)}\n"
        f"attempts retried  : {counts.get('retried', 0)}\n"
        f"dead-lettered     : {counts.get('dead_lettered', 0)}\n"
    )
    for dead in report.dead_letters:
        out.write(
            f"  DLQ  reason={dead.get('reason')!s:<18} job_type={dead.get('job_type')!s:<12} "
            f"{dead.get('error')}\n"
        )
    verdict = "as expected" if report.is_as_expected else "NOT as expected"
    out.write(f"finished in {report.seconds:.1f}s: {verdict}\n")

"""Screenshots of every dashboard page, desktop and narrow mobile, into docs/images/ (run by
``scripts/screenshots``): the browser tests' set-up (Debian's chromium, the dashboard served on
127.0.0.1) over a demo app on an embedded moto server, with dead letters, a job in progress and a
schedule to show."""

from __future__ import annotations

import os
import sys
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import boto3
from playwright.sync_api import sync_playwright
from pydantic import BaseModel

from cloudjobs import CloudJobs, Job, Settings
from cloudjobs.dashboard import NoAuth, create_app
from cloudjobs.dashboard.serving import serving
from cloudjobs.errors import PermanentError
from cloudjobs.local import LocalAwsServer, local_environment
from cloudjobs.provisioning import QueueSpec, TableSpec, provision_queue, provision_table
from tests.behaviour.conftest import running, wait_for
from tests.dashboard.test_dashboard_browser import chromium_path

SIZES = {"desktop": {"width": 1280, "height": 860}, "mobile": {"width": 390, "height": 844}}


class Order(BaseModel):
    order_id: str
    amount: int = 10


def main(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    with LocalAwsServer() as server:
        os.environ.update(local_environment(server.endpoint_url))
        session = boto3.session.Session()
        suffix = uuid.uuid4().hex[:6]
        orders = provision_queue(
            QueueSpec(f"orders-{suffix}", max_receive_count=3), client=session.client("sqs")
        )
        bulk = provision_queue(QueueSpec(f"bulk-{suffix}", max_receive_count=3), client=session.client("sqs"))
        table = TableSpec(f"orders-{suffix}-idempotency")
        provision_table(table, client=session.client("dynamodb"))
        jobs = CloudJobs(
            settings=Settings(
                _env_file=None,
                queue_url=orders.queue_url,
                queues={"bulk": bulk.queue_url},
                idempotency_table=table.name,
                status_tracking=True,
                wait_time_seconds=1,
                max_attempts=1,
                heartbeat_interval_seconds=1,
            )
        )
        release = threading.Event()

        @jobs.job("charge-card", idempotent=True)
        def charge(payload: Order) -> str:
            if payload.amount <= 0:
                raise PermanentError(f"order {payload.order_id}: amount must be positive")
            return payload.order_id

        @jobs.job("export", track_status=True, queue="bulk")
        def export(payload: Order, job: Job) -> dict[str, int]:
            job.progress(60)
            release.wait(120)
            return {"rows": 1200}

        jobs.schedule(
            "nightly-report",
            cron="0 2 * * *",
            tz="Europe/Berlin",
            job_type="export",
            payload={"order_id": "all"},
        )
        for n in range(3):
            jobs.enqueue("charge-card", Order(order_id=f"order-{n}", amount=-n))
        for n in range(5):
            jobs.enqueue("charge-card", Order(order_id=f"later-{n}"), delay=600)
        export_id = jobs.enqueue("export", Order(order_id="q3"))
        with running(jobs, queues={"default": 1, "bulk": 1}, concurrency=2):
            wait_for(lambda: (status := jobs.status(export_id)) is not None and status.progress == 60)
            wait_for(lambda: jobs.stats().dlq_depth == 3)
            application = create_app(
                jobs, auth=NoAuth("screenshots on 127.0.0.1"), sample_interval=timedelta(seconds=1)
            )
            with serving(application) as url, sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
                pages = {
                    "overview": "/",
                    "dead-letters": "/dead-letters",
                    "job": f"/jobs?id={export_id}",
                    "schedules": "/schedules",
                }
                for size_name, viewport in SIZES.items():
                    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
                    page = context.new_page()
                    for name, path in pages.items():
                        page.goto(url + path)
                        if name == "dead-letters":
                            page.locator("details summary").first.click()
                        target = directory / f"dashboard-{name}-{size_name}.png"
                        page.screenshot(path=str(target), full_page=True)
                        print(target)
                    context.close()
                browser.close()
            release.set()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/images")))

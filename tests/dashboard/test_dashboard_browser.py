"""The dashboard in headless Chromium (Debian's package, driven by Playwright) against the local moto
stack, with real jobs and a real worker: depths as SQS reports them, a poison message under its
reason, redrive and purge from the page, a job's progress and result, cancel, and a ``<script>``
payload that stays text."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright
from pydantic import BaseModel

from cloudjobs import CloudJobs, Job, Settings
from cloudjobs.dashboard import TokenAuth, create_app
from cloudjobs.dashboard.serving import serving
from cloudjobs.errors import PermanentError
from cloudjobs.provisioning import ProvisionedQueue, TableSpec, delete_table, provision_table
from tests.behaviour.conftest import running, wait_for

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

TOKEN = "browser-test-token-0123456789"


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "Debian's chromium is not installed: apt-get install -y chromium (.ci/run does)", pytrace=False
        )
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def table(aws_environment: dict[str, str]) -> Iterator[str]:
    client = boto3.session.Session().client("dynamodb")
    spec = TableSpec(f"dash-{uuid.uuid4().hex[:12]}")
    provision_table(spec, client=client)
    yield spec.name
    delete_table(spec, client=client)
    client.close()


class Order(BaseModel):
    order_id: str
    note: str = ""


class Stack:
    """An app on moto with the jobs the tests drive, and what their handlers saw."""

    def __init__(self, queue: ProvisionedQueue, table: str) -> None:
        self.queue = queue
        self.jobs = CloudJobs(
            settings=Settings(
                _env_file=None,
                queue_url=queue.queue_url,
                idempotency_table=table,
                status_tracking=True,
                wait_time_seconds=1,
                max_attempts=1,
                heartbeat_interval_seconds=0.5,
            )
        )
        self.charged: list[str] = []
        self.is_fixed = threading.Event()
        self.step = threading.Semaphore(0)
        self.lock = threading.Lock()
        jobs = self.jobs

        @jobs.job("charge", idempotent=True)
        def charge(payload: Order) -> str:
            if not self.is_fixed.is_set():
                raise PermanentError(f"card declined for {payload.order_id}")
            with self.lock:
                self.charged.append(payload.order_id)
            return payload.order_id

        @jobs.job("report", track_status=True)
        def report(payload: Order, job: Job) -> dict[str, Any]:
            for percent in (25, 50, 75):
                assert self.step.acquire(timeout=60), "the test never let the report go on"
                job.progress(percent)
            assert self.step.acquire(timeout=60)
            return {"order": payload.order_id, "rows": 3}

        @jobs.job("remind", track_status=True)
        def remind(payload: Order) -> None: ...


@pytest.fixture
def stack(make_queue: Callable[..., ProvisionedQueue], table: str) -> Stack:
    return Stack(make_queue(visibility_timeout_seconds=5, max_receive_count=3), table)


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[tuple[Page, str]]:
    application = create_app(stack.jobs, auth=TokenAuth(TOKEN), sample_interval=timedelta(seconds=1))
    with serving(application) as url:
        context = browser.new_context(http_credentials={"username": "ops", "password": TOKEN})
        opened = context.new_page()
        dialogs: list[str] = []

        def on_dialog(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        opened.on("dialog", on_dialog)
        yield opened, url
        context.close()
        assert dialogs == [], f"a script ran in the page: {dialogs}"


def _sqs_depths(client: SQSClient, queue_url: str) -> tuple[int, int, int]:
    attributes = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        int(attributes["ApproximateNumberOfMessagesDelayed"]),
    )


def test_the_overview_shows_the_depths_sqs_reports(
    page: tuple[Page, str], stack: Stack, sqs_client: SQSClient
) -> None:
    browser_page, url = page
    for n in range(3):
        stack.jobs.enqueue("remind", Order(order_id=f"o-{n}"))
    stack.jobs.enqueue("remind", Order(order_id="later"), delay=120)
    visible, in_flight, delayed = _sqs_depths(sqs_client, stack.queue.queue_url)
    browser_page.goto(url + "/")
    card = browser_page.locator('dl[data-queue="default"]')
    expect(card.locator('[data-depth="visible"]')).to_have_text(str(visible))
    expect(card.locator('[data-depth="in_flight"]')).to_have_text(str(in_flight))
    expect(card.locator('[data-depth="delayed"]')).to_have_text(str(delayed))
    assert (visible, delayed) == (3, 1)


def test_a_poison_message_shows_under_its_reason_and_a_redrive_runs_the_fixed_job_once(
    page: tuple[Page, str], stack: Stack, sqs_client: SQSClient
) -> None:
    browser_page, url = page
    job_id = stack.jobs.enqueue("charge", Order(order_id="o-42"))
    with running(stack.jobs, concurrency=2):
        wait_for(lambda: _sqs_depths(sqs_client, stack.queue.dlq_url)[0] == 1, message="the dead letter")
        browser_page.goto(url + "/dead-letters")
        expect(browser_page.locator('tr[data-reason="permanent_error"]')).to_contain_text("charge")
        letter = browser_page.locator(f'article[data-job-id="{job_id}"]')
        expect(letter.locator(".error-text")).to_contain_text("card declined for o-42")
        stack.is_fixed.set()  # the fix is deployed
        letter.get_by_label("select").check()
        browser_page.get_by_role("button", name="Redrive selected").click()
        expect(browser_page.get_by_role("status")).to_contain_text("Redriven: 1 job(s)")
        wait_for(lambda: stack.charged == ["o-42"], message="the redriven job to run")
        wait_for(lambda: sum(_sqs_depths(sqs_client, stack.queue.queue_url)) == 0)
    assert stack.charged == ["o-42"]
    assert _sqs_depths(sqs_client, stack.queue.dlq_url)[0] == 0


def test_purge_asks_first_and_removes_only_the_selected_messages(
    page: tuple[Page, str], stack: Stack, sqs_client: SQSClient
) -> None:
    browser_page, url = page
    doomed = stack.jobs.enqueue("charge", Order(order_id="doomed"))
    kept = stack.jobs.enqueue("charge", Order(order_id="kept", note="<script>alert('owned')</script>"))
    with running(stack.jobs, concurrency=2):
        wait_for(lambda: _sqs_depths(sqs_client, stack.queue.dlq_url)[0] == 2, message="two dead letters")
    browser_page.goto(url + "/dead-letters")
    kept_letter = browser_page.locator(f'article[data-job-id="{kept}"]')
    kept_letter.locator("summary", has_text="Payload").click()
    expect(kept_letter.locator("pre.payload")).to_contain_text("<script>alert('owned')</script>")  # as text
    browser_page.locator(f'article[data-job-id="{doomed}"]').get_by_label("select").check()
    browser_page.get_by_role("button", name="Purge selected…").click()
    expect(browser_page.get_by_role("heading", level=1)).to_have_text("Purge 1 message(s)?")
    assert (
        _sqs_depths(sqs_client, stack.queue.dlq_url)[0] + _sqs_depths(sqs_client, stack.queue.dlq_url)[1] == 2
    )
    browser_page.get_by_role("button", name="Delete 1 message(s)").click()
    expect(browser_page.get_by_role("status")).to_contain_text("Purged: 1 message(s)")
    remaining = stack.jobs.dlq.list()
    assert [job.job_id for job in remaining] == [kept]


def test_a_job_page_shows_progress_moving_then_the_result(
    page: tuple[Page, str], stack: Stack, sqs_client: SQSClient
) -> None:
    browser_page, url = page
    job_id = stack.jobs.enqueue("report", Order(order_id="q3"))
    with running(stack.jobs, concurrency=1):
        seen: list[str] = []
        for percent in ("25", "50", "75"):
            stack.step.release()

            def shows(percent: str = percent) -> bool:
                browser_page.goto(f"{url}/jobs?id={job_id}")
                text = browser_page.locator('[data-field="progress"]').inner_text()
                return text == f"{percent}%"

            wait_for(shows, message=f"progress {percent}%")
            seen.append(browser_page.locator('[data-field="state"]').inner_text())
        stack.step.release()

        def finished() -> bool:
            browser_page.goto(f"{url}/jobs?id={job_id}")
            return browser_page.locator('[data-field="state"]').inner_text() == "succeeded"

        wait_for(finished, message="the job to finish")
    assert seen == ["running", "running", "running"]
    expect(browser_page.locator('[data-field="result"]')).to_contain_text('"rows": 3')
    expect(browser_page.locator("progress")).to_have_attribute("value", "100")
    expect(browser_page.get_by_role("button", name="Cancel job")).to_have_count(0)  # finished


def test_cancel_from_the_job_page_stops_a_waiting_job(page: tuple[Page, str], stack: Stack) -> None:
    browser_page, url = page
    job_id = stack.jobs.enqueue("remind", Order(order_id="r-1"), delay=timedelta(hours=1))
    browser_page.goto(f"{url}/jobs?id={job_id}")
    expect(browser_page.locator('[data-field="state"]')).to_have_text("scheduled")
    browser_page.get_by_role("button", name="Cancel job").click()
    expect(browser_page.get_by_role("status")).to_contain_text("Cancel: cancelled")
    expect(browser_page.locator('[data-field="state"]')).to_have_text("cancelled")
    status = stack.jobs.status(job_id)
    assert status is not None
    assert status.state.value == "cancelled"

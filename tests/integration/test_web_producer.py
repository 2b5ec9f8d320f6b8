"""examples/web_producer: 202 with Location, then the status moves to succeeded once a worker ran.

FastAPI's TestClient drives the service; the queue is on the session's moto server and the status
table on moto's DynamoDB and on DynamoDB Local. A real worker runs in a thread until the job's state
is succeeded (awaited with a deadline).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.exceptions import StarletteDeprecationWarning

from cloudjobs import CloudJobs, Settings
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.provisioning import ProvisionedQueue, TableSpec
from examples.web_producer import app as example
from tests.behaviour.conftest import running, wait_for

with warnings.catch_warnings():
    # Newer Starlette releases warn that their test client prefers the httpx2 package; the test
    # client works with httpx (which the web extra installs), so that warning alone is silenced.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


def _service_app(
    make_queue: Callable[..., ProvisionedQueue],
    make_backend: Callable[..., SqsBackend],
    make_table: Callable[[], TableSpec],
    dynamodb_client: DynamoDBClient,
) -> CloudJobs:
    """A CloudJobs on a fresh queue and table, with the example's handler registered as it does."""
    queue = make_queue()
    jobs = CloudJobs(
        settings=Settings(_env_file=None, wait_time_seconds=1, status_tracking=True),
        backend=make_backend(queue_url=queue.queue_url, dlq_url=queue.dlq_url),
        idempotency_store=DynamoDbIdempotencyStore(make_table().name, client=dynamodb_client),
    )
    jobs.job("build-report", track_status=True)(example.build_report.__wrapped__)
    return jobs


def test_a_report_is_accepted_with_202_and_its_status_moves_to_succeeded(
    make_queue: Callable[..., ProvisionedQueue],
    make_backend: Callable[..., SqsBackend],
    make_table: Callable[[], TableSpec],
    dynamodb_client: DynamoDBClient,
) -> None:
    jobs = _service_app(make_queue, make_backend, make_table, dynamodb_client)
    client = TestClient(example.create_app(jobs))

    accepted = client.post("/reports", json={"customer_id": "c-42", "months": 4})

    assert accepted.status_code == 202
    location = accepted.headers["Location"]
    job_id = accepted.json()["job_id"]
    assert location == f"/jobs/{job_id}" == accepted.json()["status_url"]
    pending = client.get(location)
    assert pending.status_code == 200
    assert pending.json()["state"] == "pending"

    def state() -> Any:
        return client.get(location).json()["state"]

    with running(jobs):
        wait_for(lambda: state() == "succeeded", message="the report to succeed")

    done = client.get(location).json()
    assert done == {
        "job_id": job_id,
        "job_type": "build-report",
        "state": "succeeded",
        "progress": 100,
        "result": {"customer_id": "c-42", "months": 4, "total_cents": 1000},
        "error": None,
    }


def test_an_unknown_job_is_404_and_a_bad_request_is_422_without_enqueuing(
    make_queue: Callable[..., ProvisionedQueue],
    make_backend: Callable[..., SqsBackend],
    make_table: Callable[[], TableSpec],
    dynamodb_client: DynamoDBClient,
) -> None:
    jobs = _service_app(make_queue, make_backend, make_table, dynamodb_client)
    client = TestClient(example.create_app(jobs))

    assert client.get("/jobs/no-such-job").status_code == 404
    assert client.post("/reports", json={"customer_id": "c-1", "months": 0}).status_code == 422
    assert jobs.stats().visible == 0

"""The 202-Accepted pattern: ``POST /reports`` enqueues a job, ``GET /jobs/{id}`` reports on it.

The endpoint enqueues with the async producer (the send runs in a worker thread, so the event loop
keeps serving) and answers at once with ``Location: /jobs/{id}``. The job is status-tracked: with
``CLOUDJOBS_STATUS_TRACKING=true`` its record exists from the enqueue (``pending``), then the worker
moves it through ``running`` (with progress) to ``succeeded`` with the result.

    uvicorn examples.web_producer.app:app             # the web service
    cloudjobs worker examples.web_producer.app:jobs   # the worker, in another shell
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, HTTPException, Response, status
from pydantic import BaseModel, Field, JsonValue

from cloudjobs import CloudJobs, Job

jobs = CloudJobs()


class ReportRequest(BaseModel):
    """A monthly spending report for one customer."""

    customer_id: str = Field(min_length=1, max_length=64)
    months: int = Field(ge=1, le=24)


class Accepted(BaseModel):
    """The answer to ``POST /reports``."""

    job_id: str
    status_url: str


class JobView(BaseModel):
    """The answer to ``GET /jobs/{id}``."""

    job_id: str
    job_type: str
    state: str
    progress: int | None
    result: JsonValue
    error: str | None


@jobs.job("build-report", track_status=True)
def build_report(payload: ReportRequest, job: Job) -> dict[str, object]:
    """Add up a customer's spending month by month, reporting progress (a stand-in for real work)."""
    total_cents = 0
    for month in range(1, payload.months + 1):
        if job.cancelled:  # cancelled from outside (jobs.cancel): stop between months
            break
        total_cents += 100 * month
        job.progress(100 * month // payload.months)
    return {"customer_id": payload.customer_id, "months": payload.months, "total_cents": total_cents}


def create_app(jobs: CloudJobs = jobs) -> FastAPI:
    """The web service for ``jobs`` (the module's app by default; tests pass their own)."""
    api = FastAPI(title="reports")

    @api.post("/reports", status_code=status.HTTP_202_ACCEPTED)
    async def request_report(request: ReportRequest, response: Response) -> Accepted:
        job_id = await jobs.enqueue_async("build-report", request)
        location = f"/jobs/{job_id}"
        response.headers["Location"] = location
        return Accepted(job_id=job_id, status_url=location)

    @api.get("/jobs/{job_id}")
    async def job_status(job_id: str) -> JobView:
        # status() is one blocking DynamoDB Query: off the event loop too.
        current = await asyncio.to_thread(jobs.status, job_id)
        if current is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job {job_id}")
        return JobView(
            job_id=current.job_id,
            job_type=current.job_type,
            state=current.state.value,
            progress=current.progress,
            result=current.result,
            error=current.error,
        )

    return api


app = create_app()

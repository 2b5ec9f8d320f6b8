"""A CloudJobs app with a flow's jobs for the worker-process test of flows:
``cloudjobs worker tests.integration.flow_worker_app:jobs``.

Handlers append to the ledger of :mod:`tests.integration.worker_app` (``$WORKER_APP_LEDGER``):
``end`` with ``fetch-<n>`` for each child, ``completed`` with ``report-<number of results>`` for the
parent. The store is the one ``CLOUDJOBS_IDEMPOTENCY_TABLE`` names.
"""

from __future__ import annotations

import time

from cloudjobs import CloudJobs, Job
from tests.integration.worker_app import record

jobs = CloudJobs()


@jobs.job("slow-fetch")
def slow_fetch(payload: dict[str, float]) -> dict[str, float]:
    """Work a little, so that a worker can be killed while children run."""
    time.sleep(payload["seconds"])
    record("end", f"fetch-{int(payload['n'])}")
    return {"n": payload["n"]}


@jobs.job("collect")
def collect(payload: dict[str, str], job: Job) -> int:
    """The flow's parent: count its children's results."""
    results = job.child_results()
    record("completed", f"report-{len(results)}")
    return len(results)

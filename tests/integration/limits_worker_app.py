"""Limited jobs for worker-process tests, run by ``cloudjobs worker`` as
``tests.integration.limits_worker_app:jobs``.

Needs ``CLOUDJOBS_IDEMPOTENCY_TABLE`` (limits live in that table). Handlers append ``start`` and
``end`` events to the ledger named by ``$WORKER_APP_LEDGER`` (as in
:mod:`tests.integration.worker_app`), and every start the rate limiter grants is appended as a
``granted`` event, from the limits' DEBUG log line.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Final

from pydantic import BaseModel

from cloudjobs import CloudJobs
from tests.integration.worker_app import LEDGER_VARIABLE, record

RATE_JOB: Final = "limited-send"
"""At most 20 starts a second (burst 20), across every worker; idempotent on the job id, so a copy
delivered twice (SQS delivers at least once; moto's concurrent receives can hand one message to two
workers) runs once."""
CONCURRENCY_JOB: Final = "limited-export"
"""At most 2 running at once, across every worker; works for ``seconds``."""
TENANT_JOB: Final = "tenant-export"
"""At most 1 running at once per tenant; works for ``seconds``."""
RATE: Final = 20
CONCURRENCY: Final = 2

jobs = CloudJobs()


class Send(BaseModel):
    id: str


class Export(BaseModel):
    id: str
    tenant_id: str = "none"
    seconds: float


class _Grants(logging.Handler):
    """Appends a ``granted`` event for each rate-limit grant the limits stage logs."""

    def emit(self, record_: logging.LogRecord) -> None:
        try:
            if record_.getMessage().endswith("rate start granted"):
                record("granted", str(record_.__dict__.get("job_id", "")))
        except Exception:
            self.handleError(record_)


if os.environ.get(LEDGER_VARIABLE):
    # Only in a worker process started with a ledger: importing this module elsewhere (the test
    # session collects it) must leave the limits' logger alone.
    _limits_logger = logging.getLogger("cloudjobs.limits")
    _limits_logger.setLevel(logging.DEBUG)
    _limits_logger.addHandler(_Grants(logging.DEBUG))
    # The worker's own log stays at INFO: the DEBUG lines go to the ledger only.
    _limits_logger.propagate = False


@jobs.job(RATE_JOB, rate_limit=f"{RATE}/s", idempotent=True)
def send(payload: Send) -> None:
    record("start", payload.id)


@jobs.job(CONCURRENCY_JOB, concurrency_limit=CONCURRENCY, timeout=60)
def export(payload: Export) -> None:
    record("start", payload.id)
    time.sleep(payload.seconds)
    record("end", payload.id)


@jobs.job(TENANT_JOB, concurrency_limit=1, limit_key="tenant_id", timeout=60)
def tenant_export(payload: Export) -> None:
    record("start", f"{payload.tenant_id}/{payload.id}")
    time.sleep(payload.seconds)
    record("end", f"{payload.tenant_id}/{payload.id}")

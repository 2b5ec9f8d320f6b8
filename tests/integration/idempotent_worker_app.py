"""Idempotent jobs for worker-process tests run by ``cloudjobs worker`` as
``tests.integration.idempotent_worker_app:jobs``.

Needs ``CLOUDJOBS_IDEMPOTENCY_TABLE``. Handlers append ``start`` and ``end`` events to the ledger named
by ``$WORKER_APP_LEDGER`` (as in :mod:`tests.integration.worker_app`), and a middleware appends
``completed`` once a run's idempotency record is completed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

from cloudjobs import CloudJobs, Completed
from cloudjobs.consumer import Prepared
from cloudjobs.outcomes import Outcome
from tests.integration.worker_app import Gated, Work, record

CHAOS_JOB: Final = "chaos"
"""Idempotent on its payload's ``id``; works for ``seconds``."""
GATED_ONCE_JOB: Final = "gated-once"
"""Idempotent on its payload's ``id``; runs until its release file exists."""
_GATE_POLL_SECONDS: Final = 0.05

jobs = CloudJobs()


class _CompletionLedger:
    """Records ``completed`` once a run's outcome is Completed and its idempotency record is written.

    Middleware added by the app runs outside the idempotency middleware, so its ``after_run`` sees the
    outcome after the completion write (and is not called for duplicates acknowledged unrun).
    """

    def before_run(self, prepared: Prepared) -> Outcome | None:
        return None

    def after_run(self, prepared: Prepared, outcome: Outcome) -> Outcome:
        payload = prepared.envelope.payload
        if isinstance(outcome, Completed) and isinstance(payload, dict):
            record("completed", str(payload["id"]))
        return outcome


jobs.add_middleware(_CompletionLedger())


@jobs.job(CHAOS_JOB, idempotency_key="id", timeout=60)
def chaos(payload: Work) -> str:
    """Work for ``payload.seconds`` between a ``start`` and an ``end`` event (the sleep is the work)."""
    record("start", payload.id)
    time.sleep(payload.seconds)
    record("end", payload.id)
    return payload.id


@jobs.job(GATED_ONCE_JOB, idempotency_key="id")
def gated_once(payload: Gated) -> None:
    """Run until the release file exists; fail (to be retried) if it does not appear in time."""
    record("start", payload.id)
    deadline = time.monotonic() + payload.max_seconds
    release = Path(payload.release_file)
    while not release.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} did not appear within {payload.max_seconds}s")
        time.sleep(_GATE_POLL_SECONDS)
    record("end", payload.id)

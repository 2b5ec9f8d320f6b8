"""A CloudJobs app for the scheduler-process tests, run as
``cloudjobs scheduler tests.integration.scheduler_app:jobs``.

One schedule, ``beat``, every two seconds, enqueues a ``beat`` job (no consumer runs in those tests:
the queue is read back to count each tick's job). A process started with ``$SCHEDULER_APP_HANG_FILE``
hangs inside its first fire, after the claim and before the send, writing the tick's job id to that
file first: the test kills it there, as a scheduler dying mid-tick.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Final

from cloudjobs import CloudJobs
from cloudjobs.scheduling.definition import Schedule

HANG_VARIABLE: Final = "SCHEDULER_APP_HANG_FILE"
SCHEDULE: Final = "beat"
INTERVAL_SECONDS: Final = 2

jobs = CloudJobs()


@jobs.job(SCHEDULE)
def beat(payload: dict[str, object]) -> None:
    """Nothing to do: the tests count the jobs in the queue."""


jobs.schedule(SCHEDULE, every=INTERVAL_SECONDS, job_type=SCHEDULE)


def _hang_first(fire: Callable[[Schedule, datetime], str]) -> Callable[[Schedule, datetime], str]:
    def hang(schedule: Schedule, tick: datetime) -> str:
        path = os.environ.get(HANG_VARIABLE)
        if path:
            with open(path, "w") as marker:
                marker.write(schedule.job_id(tick))
            threading.Event().wait()  # until the test kills this process
        return fire(schedule, tick)

    return hang


jobs._fire_tick = _hang_first(jobs._fire_tick)  # type: ignore[method-assign, assignment]

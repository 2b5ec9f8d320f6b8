"""The rules of a schedule for late and overlapping runs, and their defaults.

Re-exported by :mod:`cloudjobs.scheduling.definition`; kept apart so that the defaults of
``jobs.schedule(...)`` load with :class:`~cloudjobs.CloudJobs` without the schedule definition
(a consumer never declares one).
"""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import Final

DEFAULT_MISFIRE_GRACE: Final = timedelta(seconds=60)
"""How late a tick may still fire (a starved scheduler, or one taking over): older ticks are missed."""


class Overlap(enum.StrEnum):
    """What a tick does while the previous run of its schedule is still pending or running."""

    ALLOW = "allow"
    """Fire regardless, as cron does (the default)."""
    SKIP = "skip"
    """Skip the tick (counted and logged); the job type must keep a status record."""


class CatchUp(enum.StrEnum):
    """What happens to ticks missed by more than the misfire grace (every scheduler was down)."""

    SKIP = "skip"
    """Count and log them; fire none (the default)."""
    ONCE = "once"
    """Fire the latest of them once, however many were missed."""

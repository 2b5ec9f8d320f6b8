"""What a flow's parent does when a child failed.

Re-exported by :mod:`cloudjobs.flows.definition`; kept apart so that the default of
``jobs.flow(...)`` loads with :class:`~cloudjobs.CloudJobs` without the flow definitions (a
consumer never creates a flow).
"""

from __future__ import annotations

import enum


class OnChildFailure(enum.StrEnum):
    """What a parent does when a child went to the dead-letter queue (or the flow timed out with
    children unfinished)."""

    FAIL = "fail"
    """The parent goes to the dead-letter queue with the reason ``child_failed``, without running."""
    IGNORE = "ignore"
    """The parent runs with the results that exist."""

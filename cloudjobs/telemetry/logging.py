"""A logging filter that adds the running job's id, type, correlation id and trace id to records.

Install it on a handler in one line::

    handler.addFilter(JobLogFilter())

or on every handler of the root logger with :func:`install_log_filter`. (A filter on a *logger*
sees only records logged through that very logger, not its children's: install it on handlers.)
``cloudjobs worker`` installs it itself.
"""

from __future__ import annotations

import logging
from typing import Final

from cloudjobs.job import current_job
from cloudjobs.telemetry.correlation import current_correlation_id
from cloudjobs.telemetry.providers import loaded

FIELDS: Final = ("job_id", "job_type", "correlation_id", "trace_id")
"""The record attributes the filter sets (to None where nothing is known)."""


class JobLogFilter(logging.Filter):
    """Adds ``job_id``, ``job_type``, ``correlation_id`` and ``trace_id`` to every record it sees.

    Values come from the job running in the logging thread or task and from the current span; a
    field the record already has (e.g. passed with ``extra=``) is kept. Never filters a record out.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the fields; always True."""
        fields = record.__dict__
        job = current_job()
        if fields.get("job_id") is None:
            fields["job_id"] = job.id if job is not None else None
        if fields.get("job_type") is None:
            fields["job_type"] = job.type if job is not None else None
        if fields.get("correlation_id") is None:
            fields["correlation_id"] = current_correlation_id()
        if fields.get("trace_id") is None:
            fields["trace_id"] = _current_trace_id()
        return True


def _current_trace_id() -> str | None:
    trace = loaded("opentelemetry.trace")
    if trace is None:
        return None  # the tracing API is not loaded: no span can be current
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def install_log_filter(handler: logging.Handler | None = None) -> JobLogFilter:
    """Add a :class:`JobLogFilter` to ``handler``, or to every handler of the root logger.

    Returns:
        The filter installed (to remove it later with ``handler.removeFilter``).
    """
    log_filter = JobLogFilter()
    handlers = [handler] if handler is not None else logging.getLogger().handlers
    for target in handlers:
        if not any(isinstance(existing, JobLogFilter) for existing in target.filters):
            target.addFilter(log_filter)
    return log_filter

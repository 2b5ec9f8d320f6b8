"""Logging for the worker and the scheduler: JSON lines or text with job fields (and a scheduled
tick's schedule and tick), and a default when none is configured."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Final

from cloudjobs.telemetry.logging import JobLogFilter

_JOB_FIELDS: Final = (
    "job_id",
    "job_type",
    "attempt",
    "reason",
    "correlation_id",
    "trace_id",
    "schedule",
    "tick",
)
_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PACKAGE_LOGGER: Final = "cloudjobs"


class JsonFormatter(logging.Formatter):
    """Formats a record as a JSON line with time, level, logger, message and any job fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _JOB_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(*, level: str = "INFO", json_lines: bool = True) -> None:
    """Send cloudjobs' logs (and the root logger's) to stderr, as JSON lines or plain text."""
    handler = logging.StreamHandler()
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    # Every record logged while a job runs gets its job id, correlation id and trace id.
    handler.addFilter(JobLogFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # botocore logs every credential lookup at INFO: keep its noise out of job logs.
    logging.getLogger("botocore").setLevel(logging.WARNING)


class _DefaultHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`install_default_logging` adds (a class of its own, so it is added once)."""


def install_default_logging() -> bool:
    """Print cloudjobs' logs (job failures and completions included) when nothing else would.

    When neither the root logger nor any ``cloudjobs`` logger has a handler (a script that never
    configured logging), add a human-readable stderr handler at INFO to the ``cloudjobs`` logger,
    as Celery does for its workers. Any configuration the user made is left as it is.

    Returns:
        True when the default was installed by this call.
    """
    package = logging.getLogger(_PACKAGE_LOGGER)
    if logging.getLogger().handlers or _has_own_handlers():
        return False
    handler = _DefaultHandler()
    handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    handler.addFilter(JobLogFilter())
    package.addHandler(handler)
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)
    return True


def _has_own_handlers() -> bool:
    # A copy: another thread may create a logger meanwhile.
    loggers = list(logging.Logger.manager.loggerDict.items())
    return any(
        isinstance(logger, logging.Logger) and logger.handlers
        for name, logger in loggers
        if name == _PACKAGE_LOGGER or name.startswith(_PACKAGE_LOGGER + ".")
    )

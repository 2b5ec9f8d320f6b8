"""Structured logging for the worker: one JSON object per line, job fields included."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Final

from cloudjobs.telemetry.logging import JobLogFilter

_JOB_FIELDS: Final = ("job_id", "job_type", "attempt", "reason", "correlation_id", "trace_id")


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
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Every record logged while a job runs gets its job id, correlation id and trace id.
    handler.addFilter(JobLogFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # botocore logs every credential lookup at INFO: keep its noise out of job logs.
    logging.getLogger("botocore").setLevel(logging.WARNING)

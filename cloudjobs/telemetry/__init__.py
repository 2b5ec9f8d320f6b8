"""OpenTelemetry for cloudjobs: one trace and one correlation id from enqueue to handle, metrics, logs.

Only ``opentelemetry-api`` is needed: without an SDK every span and metric is a no-op (trace
context still passes through). Install ``cloudjobs[otel]`` and configure an SDK to export; see
``docs/observability.md``. The Prometheus endpoint is in :mod:`cloudjobs.telemetry.prometheus`,
imported on demand.
"""

from __future__ import annotations

from cloudjobs.telemetry.logging import JobLogFilter, install_log_filter
from cloudjobs.telemetry.propagation import (
    CORRELATION_BAGGAGE_KEY,
    correlation_scope,
    current_correlation_id,
)
from cloudjobs.telemetry.spans import SEMCONV_VERSION, Telemetry

__all__ = [
    "CORRELATION_BAGGAGE_KEY",
    "SEMCONV_VERSION",
    "JobLogFilter",
    "Telemetry",
    "correlation_scope",
    "current_correlation_id",
    "install_log_filter",
]

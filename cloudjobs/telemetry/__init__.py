"""OpenTelemetry for cloudjobs: one trace and one correlation id from enqueue to handle, metrics, logs.

Only ``opentelemetry-api`` is needed: without an SDK every span and metric is a no-op (trace
context still passes through). Install ``cloudjobs[otel]`` and configure an SDK to export; see
``docs/observability.md``. The Prometheus endpoint is in :mod:`cloudjobs.telemetry.prometheus`,
imported on demand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudjobs.lazy import lazy_names

# The names load on first access: OpenTelemetry itself loads only with the spans, propagation,
# metrics or the log filter's trace id, which a consumer without an SDK or trace context never needs.
if TYPE_CHECKING:
    from cloudjobs.telemetry.correlation import (
        CORRELATION_BAGGAGE_KEY,
        correlation_scope,
        current_correlation_id,
    )
    from cloudjobs.telemetry.logging import JobLogFilter, install_log_filter
    from cloudjobs.telemetry.spans import SEMCONV_VERSION
    from cloudjobs.telemetry.switch import Telemetry

__all__ = [
    "CORRELATION_BAGGAGE_KEY",
    "SEMCONV_VERSION",
    "JobLogFilter",
    "Telemetry",
    "correlation_scope",
    "current_correlation_id",
    "install_log_filter",
]

_MODULES = {
    "CORRELATION_BAGGAGE_KEY": "cloudjobs.telemetry.correlation",
    "SEMCONV_VERSION": "cloudjobs.telemetry.spans",
    "JobLogFilter": "cloudjobs.telemetry.logging",
    "Telemetry": "cloudjobs.telemetry.switch",
    "correlation_scope": "cloudjobs.telemetry.correlation",
    "current_correlation_id": "cloudjobs.telemetry.correlation",
    "install_log_filter": "cloudjobs.telemetry.logging",
}

__getattr__, __dir__ = lazy_names(__name__, _MODULES, __all__)

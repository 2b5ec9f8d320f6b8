"""Expose the process's metrics for Prometheus to scrape (``cloudjobs worker --metrics-port``).

Needs the ``otel`` extra (``pip install 'cloudjobs[otel]'``: the OpenTelemetry SDK and its
Prometheus exporter), imported only when :func:`serve_prometheus` runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

logger = logging.getLogger("cloudjobs.telemetry")

EXTRA_HINT: Final = "install the otel extra: pip install 'cloudjobs[otel]'"

# Scraped from outside the container (another task, an ECS sidecar, a node agent).
DEFAULT_ADDRESS: Final = "0.0.0.0"  # noqa: S104


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """A running scrape endpoint.

    Attributes:
        address: the address it listens on.
        port: the port it listens on (the one chosen when 0 was asked).
    """

    address: str
    port: int


def serve_prometheus(port: int, *, address: str = DEFAULT_ADDRESS) -> MetricsServer:
    """Install an SDK meter provider that Prometheus can scrape, and serve ``/metrics`` on ``port``.

    The provider becomes the global one, so cloudjobs' instruments (and the application's) report
    to it. The server runs on a daemon thread for the life of the process.

    Args:
        port: the TCP port (0 picks a free one).
        address: the address to listen on (all interfaces by default, as a scraper runs elsewhere).

    Raises:
        ImportError: the SDK or the Prometheus exporter is missing (the message names the extra).
        ConfigurationError: an SDK meter provider is already installed; add a
            ``PrometheusMetricReader`` to it instead.
    """
    try:
        from opentelemetry import metrics
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import start_http_server
    except ImportError as exc:
        raise ImportError(
            f"the Prometheus endpoint needs the OpenTelemetry SDK and exporter: {EXTRA_HINT}"
        ) from exc
    from cloudjobs.errors import ConfigurationError

    if isinstance(metrics.get_meter_provider(), MeterProvider):
        raise ConfigurationError(
            "an OpenTelemetry SDK meter provider is already installed: add "
            "opentelemetry.exporter.prometheus.PrometheusMetricReader() to its metric_readers instead",
            setting="--metrics-port",
        )
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    metrics.set_meter_provider(provider)
    server, _thread = start_http_server(port, addr=address)
    bound_port = int(server.server_address[1])
    logger.info("serving Prometheus metrics on %s:%d/metrics", address, bound_port)
    return MetricsServer(address=address, port=bound_port)

"""The OpenTelemetry SDK for tests: in-memory span exporter and metric reader, installed once.

The SDK's global providers can be set once per process, so :func:`capture` installs them on first
use and every test clears the exporter instead. Tests tell their data apart by queue name (each
test uses its own queue).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.types import AttributeValue


@dataclass(frozen=True)
class Capture:
    """What the SDK recorded: finished spans and metric data points."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Finished spans, in the order they ended (only those called ``name`` when given)."""
        return [span for span in self.exporter.get_finished_spans() if name is None or span.name == name]

    def span(self, name: str) -> ReadableSpan:
        """The one finished span called ``name`` (fails when there are none or several)."""
        [span] = self.spans(name)
        return span

    def points(self, metric: str, **attributes: AttributeValue) -> list[object]:
        """Data points of ``metric`` whose attributes include ``attributes``."""
        data = self.reader.get_metrics_data()
        found: list[object] = []
        if data is None:
            return found
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for item in scope_metrics.metrics:
                    if item.name != metric:
                        continue
                    for point in item.data.data_points:
                        point_attributes: Mapping[str, AttributeValue] = point.attributes or {}
                        if all(point_attributes.get(key) == value for key, value in attributes.items()):
                            found.append(point)
        return found

    def value(self, metric: str, **attributes: AttributeValue) -> float:
        """The sum of a counter's (or the last value of a gauge's) matching points; 0 when none."""
        total = 0.0
        for point in self.points(metric, **attributes):
            assert isinstance(point, NumberDataPoint)
            total += point.value
        return total

    def count(self, metric: str, **attributes: AttributeValue) -> int:
        """How many values a histogram recorded in its matching points."""
        total = 0
        for point in self.points(metric, **attributes):
            assert isinstance(point, HistogramDataPoint)
            total += point.count
        return total


@functools.cache
def _install() -> Capture:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return Capture(exporter, reader)


def capture() -> Iterator[Capture]:
    """Install the SDK (once per process) and yield a cleared capture; clears it again after."""
    installed = _install()
    installed.exporter.clear()
    yield installed
    installed.exporter.clear()


def links_to(span: ReadableSpan) -> Sequence[int]:
    """The span ids ``span`` links to."""
    return [link.context.span_id for link in span.links]

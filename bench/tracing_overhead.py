"""Per-job CPU cost of tracing on the in-memory backend: untraced, API only (no SDK), SDK.

Each run is a fresh process (the SDK's global providers can be set once per process) that enqueues
and handles ``--jobs`` no-op jobs on a :class:`~cloudjobs.MemoryBackend`, in chunks of 100 (enqueue
one by one, then drain: the memory queue stays small, so the queue's own cost does not drown the
comparison). Its CPU time (user + system, ``time.process_time``) over the jobs, after a warm-up
chunk, divided by the number of jobs, is that run's figure. Modes alternate run by run:

- **untraced**: ``Telemetry(is_enabled=False)``: no spans, metrics or injection (the baseline);
- **no SDK**: the default, with only ``opentelemetry-api`` configured (no-op tracer and meter);
- **SDK**: the OpenTelemetry SDK with an in-memory span exporter (simple processor) and an
  in-memory metric reader.

Reported: the median per mode, in µs per job, and its ratio to the untraced median.

Run: ``python bench/tracing_overhead.py`` (``--jobs 20000 --rounds 5``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Final

MODES: Final = ("untraced", "no SDK", "SDK")
_CHUNK: Final = 100


def measure(mode: str, jobs: int) -> float:
    """Run ``jobs`` no-op jobs in this process under ``mode``; returns CPU µs per job."""
    exporter = None
    if mode == "SDK":
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))

    from cloudjobs import CloudJobs, MemoryBackend, Settings
    from cloudjobs.clock import SystemClock
    from cloudjobs.consumer import Consumer
    from cloudjobs.producer import EnqueueRequest, Producer
    from cloudjobs.runtimes.drain import drain
    from cloudjobs.telemetry import Telemetry

    telemetry = Telemetry(is_enabled=mode != "untraced")
    backend = MemoryBackend("bench", max_receive_count=None)
    app = CloudJobs(settings=Settings(_env_file=None), backend=backend)

    @app.job("noop")
    def noop(payload: dict[str, int]) -> None:
        pass

    producer = Producer(backend, SystemClock(), telemetry=telemetry)
    consumer = Consumer(
        registry=app.registry, settings=app.settings, queue=backend.info(), telemetry=telemetry
    )
    request = EnqueueRequest("noop", {"n": 1})

    def chunk() -> None:
        for _ in range(_CHUNK):
            producer.enqueue([request])
        report = drain(consumer, backend, max_jobs=_CHUNK)
        assert report.completed == _CHUNK
        if exporter is not None:
            exporter.clear()

    chunk()  # warm-up: first-use caches, imports done lazily
    started = time.process_time()
    for _ in range(jobs // _CHUNK):
        chunk()
    elapsed = time.process_time() - started
    return elapsed / (jobs // _CHUNK * _CHUNK) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(measure(arguments.child, arguments.jobs)))
        return
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_number in range(arguments.rounds):
        for mode in MODES:
            completed = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--jobs", str(arguments.jobs)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[mode].append(float(json.loads(completed.stdout)))
        print(
            f"round {round_number + 1}: "
            + ", ".join(f"{mode} {values[-1]:.1f} µs" for mode, values in results.items()),
            file=sys.stderr,
        )
    baseline = statistics.median(results["untraced"])
    print(f"{arguments.jobs} no-op jobs per run, {arguments.rounds} alternating rounds, median CPU per job:")
    for mode in MODES:
        median = statistics.median(results[mode])
        print(f"  {mode:<9} {median:7.1f} µs  ×{median / baseline:.3f}  (+{median - baseline:.1f} µs)")


if __name__ == "__main__":
    main()

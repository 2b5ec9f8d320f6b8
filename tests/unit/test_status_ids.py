"""A job's status names its correlation id and the trace its message carried (for the dashboard's
link to a trace viewer), from its pending record or its first lease."""

from __future__ import annotations

from pydantic import BaseModel

from cloudjobs import CloudJobs, Settings
from cloudjobs.backends.memory import MemoryBackend
from cloudjobs.telemetry.propagation import trace_id_of
from tests.otel import Capture


class Report(BaseModel):
    name: str


def test_status_carries_the_correlation_id_and_the_enqueue_trace(otel: Capture) -> None:
    backend = MemoryBackend()
    jobs = CloudJobs(settings=Settings(_env_file=None, status_tracking=True), backend=backend)

    @jobs.job("report", track_status=True)
    def report(payload: Report) -> str:
        return payload.name

    with jobs.testing(backend):
        job_id = jobs.enqueue("report", Report(name="q3"))
        pending = jobs.status(job_id)
        (message,) = backend.messages()
        jobs.drain()
        done = jobs.status(job_id)
    assert pending is not None
    assert done is not None
    assert pending.correlation_id == message.attributes["cloudjobs.correlation_id"]
    assert done.correlation_id == pending.correlation_id
    assert pending.trace_id is None  # the pending record is written before the message is stamped
    send = otel.span(f"send {backend.name}")
    assert done.trace_id == format(send.context.trace_id, "032x")
    assert done.trace_id == trace_id_of(message.attributes)


def test_trace_ids_are_read_only_from_valid_traceparents() -> None:
    valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert trace_id_of({"traceparent": valid}) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_of({}) is None
    assert trace_id_of({"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"}) is None
    assert trace_id_of({"traceparent": "00-not-hex-at-all-00f067aa0ba902b7-01"}) is None
    assert trace_id_of({"traceparent": "00-" + "z" * 32 + "-00f067aa0ba902b7-01"}) is None

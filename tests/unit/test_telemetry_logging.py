"""The log filter: job id, job type, correlation id and trace id on every record a job logs."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry import trace

from cloudjobs import CloudJobs, Job, ManualClock, MemoryBackend, Settings
from cloudjobs.logs import configure_logging
from cloudjobs.telemetry import JobLogFilter, correlation_scope, install_log_filter
from tests.fresh import run_fresh
from tests.otel import Capture


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected() -> Iterator[_Collect]:
    handler = _Collect()
    handler.addFilter(JobLogFilter())
    logger = logging.getLogger("tests.jobs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


def test_records_logged_in_a_handler_carry_the_job_correlation_and_trace_ids(
    otel: Capture, collected: _Collect
) -> None:
    backend = MemoryBackend(f"jobs-{uuid.uuid4().hex[:8]}")
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=ManualClock())
    seen: dict[str, str] = {}

    @jobs.job("chatty")
    def chatty(payload: dict[str, str], job: Job) -> None:
        seen["job_id"] = job.id
        seen["correlation_id"] = job.correlation_id
        logging.getLogger("tests.jobs").info("working")

    jobs.enqueue("chatty", {})
    jobs.drain()

    [record] = collected.records
    span = otel.span(f"process {backend.name}")
    assert record.__dict__["job_id"] == seen["job_id"]
    assert record.__dict__["job_type"] == "chatty"
    assert record.__dict__["correlation_id"] == seen["correlation_id"]
    assert record.__dict__["trace_id"] == format(span.context.trace_id, "032x")


def test_outside_a_job_the_fields_are_none_or_the_request_correlation(
    otel: Capture, collected: _Collect
) -> None:
    logger = logging.getLogger("tests.jobs")
    logger.info("idle")
    with correlation_scope("request-1"), trace.get_tracer("test").start_as_current_span("request") as span:
        logger.info("in a request")

    idle, request = collected.records
    assert [idle.__dict__[name] for name in ("job_id", "job_type", "correlation_id", "trace_id")] == [
        None
    ] * 4
    assert request.__dict__["correlation_id"] == "request-1"
    assert request.__dict__["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_fields_passed_by_the_caller_are_kept(collected: _Collect) -> None:
    logging.getLogger("tests.jobs").info("explicit", extra={"job_id": "given"})

    [record] = collected.records
    assert record.__dict__["job_id"] == "given"


def test_install_log_filter_adds_one_filter_per_handler() -> None:
    handler = _Collect()

    first = install_log_filter(handler)
    install_log_filter(handler)

    assert handler.filters == [first]


def test_configure_logging_puts_the_job_fields_in_json_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    try:
        configure_logging(level="INFO", json_lines=True)
        with correlation_scope("request-9"):
            logging.getLogger("tests.jobs.json").info("hello")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)

    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["message"] == "hello"
    assert line["correlation_id"] == "request-9"


def test_a_log_record_made_while_another_thread_imports_the_baggage_api_waits_for_it() -> None:
    # A fresh interpreter: the baggage module is held half-initialised by another thread's import
    # (in sys.modules, without its functions yet) while a record is filtered; the filter must wait
    # for the import, not read the half-made module.
    script = """
import importlib.abc, json, logging, sys, threading
started, proceed = threading.Event(), threading.Event()

class Held(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "opentelemetry.baggage":
            return None
        sys.meta_path.remove(self)
        import importlib.util
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(module):
            started.set()
            proceed.wait(30)
            run(module)
        spec.loader.exec_module = exec_module
        return spec

from cloudjobs.telemetry.logging import JobLogFilter
sys.meta_path.insert(0, Held())
importer = threading.Thread(target=lambda: __import__("opentelemetry.baggage"))
importer.start()
assert started.wait(30)
outcome = []
def log():
    record = logging.LogRecord("x", logging.INFO, "job.py", 1, "m", (), None)
    try:
        JobLogFilter().filter(record)
        outcome.append(["ok", record.correlation_id])
    except Exception as error:
        outcome.append([type(error).__name__, None])
logger = threading.Thread(target=log)
logger.start()
logger.join(0.2)  # time for a reader of the half-made module to fail
proceed.set()
logger.join(30)
importer.join(30)
print(json.dumps(outcome))
"""
    stdout = run_fresh(script)

    assert json.loads(stdout) == [["ok", None]]

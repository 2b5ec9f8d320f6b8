"""Cold-start cost of the Lambda runtime against Powertools' batch utilities, side by side.

Each run is a fresh interpreter (``-X importtime -c "import cloudjobs.runtimes.aws_lambda"``); the
total is the sum of every module's own ("self") import time, so modules imported before ``site``
finishes are counted too. Also measured, in the same kind of fresh interpreters, alternating:

- **cloudjobs**: the wall time of importing ``cloudjobs`` and its Lambda runtime, of building a
  handler (``jobs.lambda_handler()``, no I/O), and of its first batch of ten records (settings read
  from the environment, the queue's consumer built: what a cold start's first invocation adds);
- **Powertools**: the wall time of importing AWS Lambda Powertools' batch utilities and their SQS
  record model (``BatchProcessor``, ``EventType``, ``process_partial_response``,
  ``SqsRecordModel``: both load pydantic), of building a ``BatchProcessor``, and of its first batch.

Both read compiled bytecode, as an installed package does: the interpreters share a bytecode cache
in a temporary directory (``PYTHONPYCACHEPREFIX``), filled by a first, untimed run of each (a
checkout run with ``PYTHONDONTWRITEBYTECODE`` would otherwise compile cloudjobs' sources on every
run, but not the installed Powertools'). Medians of ``--runs`` runs; the top contributors are
grouped by top-level package, from the median run.

Run: ``python bench/import_time.py`` (``--runs 7 --top 10``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass

MODULE = "cloudjobs.runtimes.aws_lambda"
CONTENDERS = ("Powertools", "cloudjobs")
# One SQS event of ten records (its queue only named by the ARN), for each contender's first batch.
_EVENT = """
import json
body = json.dumps({"cloudjobs": 1, "id": "j", "type": "noop", "payload": {"n": 1}, "correlation_id": "c",
                   "enqueued_at": "2026-01-01T00:00:00Z", "idempotency_key": None, "attempt_offset": 0,
                   "redrive_count": 0})
pairs = (("cloudjobs.type", "noop"), ("cloudjobs.id", "j"), ("cloudjobs.correlation_id", "c"))
attributes = {name: {"dataType": "String", "stringValue": value, "stringListValues": [],
                     "binaryListValues": []}
              for name, value in pairs}
event = {"Records": [{
    "messageId": f"m{n}", "receiptHandle": f"r{n}", "body": body, "md5OfBody": "",
    "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000",
                   "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1700000000000"},
    "messageAttributes": attributes, "eventSource": "aws:sqs", "awsRegion": "eu-west-1",
    "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:jobs"} for n in range(10)]}
class Context:
    def get_remaining_time_in_millis(self):
        return 60_000
"""
_SCRIPTS = {
    "cloudjobs": """
import json, os, time
os.environ.setdefault("CLOUDJOBS_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs")
start = time.perf_counter()
import cloudjobs, cloudjobs.runtimes.aws_lambda
imported = time.perf_counter()
jobs = cloudjobs.CloudJobs(backend=cloudjobs.MemoryBackend("jobs"))
ran = []
@jobs.job("noop")
def noop(payload):
    ran.append(payload)
handler = jobs.lambda_handler()
built = time.perf_counter()
"""
    + _EVENT
    + """
event_ready = time.perf_counter()
assert handler(event, Context()) == {"batchItemFailures": []}
done = time.perf_counter()
assert ran == [{"n": 1}] * 10, ran  # every record ran its job (none dead-lettered)
print(json.dumps({"import": imported - start, "build": built - imported, "first batch": done - event_ready}))
""",
    "Powertools": """
import json, time
start = time.perf_counter()
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
imported = time.perf_counter()
processor = BatchProcessor(event_type=EventType.SQS, model=SqsRecordModel)
ran = []
def record_handler(record):
    ran.append(json.loads(record.body)["payload"])
built = time.perf_counter()
"""
    + _EVENT
    + """
event_ready = time.perf_counter()
response = process_partial_response(event=event, record_handler=record_handler, processor=processor)
assert response == {"batchItemFailures": []}, response
done = time.perf_counter()
assert ran == [{"n": 1}] * 10, ran
print(json.dumps({"import": imported - start, "build": built - imported, "first batch": done - event_ready}))
""",
}


@dataclass(frozen=True, slots=True)
class ImportLine:
    """One line of ``-X importtime`` output (microseconds)."""

    self_us: int
    cumulative_us: int
    depth: int
    module: str


def importtime(module: str, environment: dict[str, str]) -> list[ImportLine]:
    """Run a fresh interpreter with ``-X importtime`` importing ``module``; its lines, in order."""
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    lines: list[ImportLine] = []
    for line in completed.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        lines.append(ImportLine(int(self_us), int(cumulative_us), depth, name.strip()))
    return lines


def cold_start(contender: str, environment: dict[str, str]) -> dict[str, float]:
    """Seconds to import, build and run a first batch, in a fresh interpreter."""
    completed = subprocess.run(
        [sys.executable, "-c", _SCRIPTS[contender]],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    times: dict[str, float] = json.loads(completed.stdout)
    return times


def bytecode_environment(cache: str) -> dict[str, str]:
    """The environment of the timed interpreters: bytecode read from and written to ``cache``."""
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    environment["PYTHONPYCACHEPREFIX"] = cache
    return environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"import time of {MODULE}")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--top", type=int, default=10)
    arguments = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cloudjobs-bytecode-") as cache:
        environment = bytecode_environment(cache)
        for contender in CONTENDERS:  # untimed: fills the bytecode cache
            cold_start(contender, environment)
        runs = [importtime(MODULE, environment) for _ in range(arguments.runs)]
        starts: dict[str, list[dict[str, float]]] = {name: [] for name in CONTENDERS}
        for index in range(arguments.runs):
            for contender in CONTENDERS if index % 2 == 0 else tuple(reversed(CONTENDERS)):
                starts[contender].append(cold_start(contender, environment))
    totals = [sum(line.self_us for line in run) for run in runs]
    median_total = statistics.median(totals)
    median_run = min(runs, key=lambda run: abs(sum(line.self_us for line in run) - median_total))

    def median_ms(contender: str, *measures: str) -> float:
        return statistics.median(sum(start[m] for m in measures) for start in starts[contender]) * 1000

    print(f"`python -X importtime -c 'import {MODULE}'`, median of {arguments.runs} fresh interpreters\n")
    print("| measure | ms |")
    print("|---|---|")
    print(f"| import time, all modules (sum of self) | {median_total / 1000:.1f} |")
    print(f"| modules imported | {len(median_run)} |")

    print(
        f"\nCold start, wall time: median of {arguments.runs} fresh interpreters each, alternating, "
        "bytecode cached\n"
    )
    print("| measure | Powertools (ms) | cloudjobs (ms) | ratio |")
    print("|---|---|---|---|")
    for label, measures in (
        ("import", ("import",)),
        ("build the handler", ("build",)),
        ("import + build", ("import", "build")),
        ("first batch of ten", ("first batch",)),
        ("import + build + first batch", ("import", "build", "first batch")),
    ):
        theirs, ours = median_ms("Powertools", *measures), median_ms("cloudjobs", *measures)
        print(f"| {label} | {theirs:.2f} | {ours:.2f} | {ours / theirs:.2f} |")

    by_package: dict[str, int] = {}
    for line in median_run:
        package = line.module.split(".", 1)[0]
        by_package[package] = by_package.get(package, 0) + line.self_us
    print(f"\nTop {arguments.top} packages by import time (sum of their modules' self time, median run):\n")
    print("| package | ms | share |")
    print("|---|---|---|")
    for package, micros in sorted(by_package.items(), key=lambda item: -item[1])[: arguments.top]:
        print(f"| {package} | {micros / 1000:.1f} | {micros / median_total:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

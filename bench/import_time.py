"""Cold-start cost of the Lambda runtime: ``python -X importtime`` of ``cloudjobs.runtimes.aws_lambda``.

Each run is a fresh interpreter (``-X importtime -c "import cloudjobs.runtimes.aws_lambda"``); the
total is the sum of every module's own ("self") import time, so modules imported before ``site``
finishes are counted too. Also measured, in the same kind of fresh interpreter: the wall time of
importing the module and building a handler (``jobs.lambda_handler()``, no I/O). Medians of
``--runs`` runs; the top contributors are grouped by top-level package, from the median run.

Run: ``python bench/import_time.py`` (``--runs 7 --top 10``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass

MODULE = "cloudjobs.runtimes.aws_lambda"
_BUILD_SCRIPT = """
import json, os, time
os.environ.setdefault("CLOUDJOBS_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs")
start = time.perf_counter()
import cloudjobs, cloudjobs.runtimes.aws_lambda
imported = time.perf_counter()
jobs = cloudjobs.CloudJobs()
jobs.job("noop")(lambda payload: None)
handler = jobs.lambda_handler()
built = time.perf_counter()
print(json.dumps({"import": imported - start, "build": built - imported}))
"""


@dataclass(frozen=True, slots=True)
class ImportLine:
    """One line of ``-X importtime`` output (microseconds)."""

    self_us: int
    cumulative_us: int
    depth: int
    module: str


def importtime(module: str) -> list[ImportLine]:
    """Run a fresh interpreter with ``-X importtime`` importing ``module``; its lines, in order."""
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines: list[ImportLine] = []
    for line in completed.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        lines.append(ImportLine(int(self_us), int(cumulative_us), depth, name.strip()))
    return lines


def build_times() -> dict[str, float]:
    """Seconds to import cloudjobs and the Lambda runtime, and to build a handler, in a fresh interpreter."""
    completed = subprocess.run(
        [sys.executable, "-c", _BUILD_SCRIPT], capture_output=True, text=True, check=True
    )
    times: dict[str, float] = json.loads(completed.stdout)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"import time of {MODULE}")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--top", type=int, default=10)
    arguments = parser.parse_args(argv)

    runs = [importtime(MODULE) for _ in range(arguments.runs)]
    totals = [sum(line.self_us for line in run) for run in runs]
    median_total = statistics.median(totals)
    median_run = min(runs, key=lambda run: abs(sum(line.self_us for line in run) - median_total))
    builds = [build_times() for _ in range(arguments.runs)]

    print(f"`python -X importtime -c 'import {MODULE}'`, median of {arguments.runs} fresh interpreters\n")
    print("| measure | ms |")
    print("|---|---|")
    print(f"| import time, all modules (sum of self) | {median_total / 1000:.1f} |")
    print(
        f"| wall: import cloudjobs + runtime | {statistics.median(b['import'] for b in builds) * 1000:.1f} |"
    )
    print(f"| wall: build the handler | {statistics.median(b['build'] for b in builds) * 1000:.2f} |")
    print(f"| modules imported | {len(median_run)} |")

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

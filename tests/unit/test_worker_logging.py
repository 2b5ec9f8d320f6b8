"""``jobs.worker().run()`` in a script prints job failures and completions, unless logging is configured.

Each test runs a small script in a fresh interpreter (pytest's own log capture would count as a
configuration here) on the memory backend: one job completes, one fails for good.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Final

_SCRIPT: Final = textwrap.dedent(
    """
    import logging
    import threading
    import time

    from cloudjobs import CloudJobs, MemoryBackend, PermanentError, Settings

    {configure}
    jobs = CloudJobs(settings=Settings(_env_file=None, wait_time_seconds=1), backend=MemoryBackend("jobs"))

    @jobs.job("fine")
    def fine(payload: dict) -> None:
        pass

    @jobs.job("broken")
    def broken(payload: dict) -> None:
        raise PermanentError("the payload can never work")

    jobs.enqueue("fine", {{}})
    jobs.enqueue("broken", {{}})
    worker = jobs.worker(queue_metrics_interval=None)

    def stop_when_done() -> None:
        deadline = time.monotonic() + 20
        while worker.counts["completed"] + worker.counts["dead_lettered"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        worker.stop()

    threading.Thread(target=stop_when_done, daemon=True).start()
    worker.run()
    """
)


def _run(configure: str = "") -> str:
    """Run the script with ``configure`` as its logging set-up; returns its stderr."""
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(configure=configure)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_a_script_without_logging_configured_prints_failures_and_completions_as_text() -> None:
    stderr = _run()

    assert " INFO cloudjobs.jobs: job " in stderr
    assert "(fine) completed in" in stderr
    assert " WARNING cloudjobs.jobs: job " in stderr
    assert "(broken) attempt 1/5 failed" in stderr
    assert "Traceback" in stderr
    assert "PermanentError: the payload can never work" in stderr
    assert " INFO cloudjobs.worker: worker started" in stderr


def test_a_script_that_configured_logging_keeps_its_own_format_and_level() -> None:
    stderr = _run('logging.basicConfig(level=logging.WARNING, format="MINE %(levelname)s %(message)s")')

    lines = [line for line in stderr.splitlines() if line.startswith(("MINE", "20"))]
    assert lines, stderr
    assert all(line.startswith("MINE ") for line in lines), stderr
    assert any("(broken) attempt 1/5 failed" in line for line in lines)
    assert "completed in" not in stderr  # INFO, below the level the script chose


def test_a_script_that_configured_a_cloudjobs_logger_gets_no_second_handler() -> None:
    configure = (
        'handler = logging.StreamHandler()\nhandler.setFormatter(logging.Formatter("OWN %(message)s"))\n'
        'logging.getLogger("cloudjobs.jobs").addHandler(handler)\n'
        'logging.getLogger("cloudjobs.jobs").setLevel(logging.INFO)'
    )

    stderr = _run(configure)

    assert "OWN job " in stderr
    assert " INFO cloudjobs.jobs: " not in stderr
    assert stderr.count("completed in") == 1

"""Running a script in a fresh interpreter: for what one process cannot show twice (what an import
loads, a provider installed before or after the first check)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def run_fresh(script: str, *, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run ``script`` with ``python -c`` (this interpreter, in ``cwd`` if given) and return its
    standard output.

    Raises:
        AssertionError: the script failed (its standard error is in the message).
    """
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=None if env is None else dict(env),
        cwd=cwd,
        check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(f"the script exited with {completed.returncode}:\n{completed.stderr}")
    return completed.stdout

"""``cloudjobs demo``: sample jobs on an embedded local AWS, no account needed."""

from __future__ import annotations

import click

from cloudjobs.cli.exit_codes import EXIT_FAILED, EXIT_OK


@click.command(short_help="Run sample jobs on an embedded local AWS.")
def demo() -> int:
    """Run sample jobs on an embedded local AWS (needs the local extra) and print a report.

    Exits 1 when the jobs did not settle as expected.
    """
    from cloudjobs.demo import run_demo
    from cloudjobs.logs import configure_logging

    configure_logging(level="ERROR", json_lines=False)
    report = run_demo()
    return EXIT_OK if report.is_as_expected else EXIT_FAILED

"""``cloudjobs scheduler``: run the self-hosted scheduler of an app's schedules until SIGTERM."""

from __future__ import annotations

import signal
from datetime import timedelta

import click

from cloudjobs.cli.apps import load_app
from cloudjobs.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from cloudjobs.cli.options import serve_metrics
from cloudjobs.errors import ConfigurationError


@click.command(short_help="Fire an app's recurring schedules until SIGTERM.")
@click.argument("app_reference", metavar="APP")
@click.option("--once", is_flag=True, help="Fire what is due now, then exit (for a run from cron).")
@click.option(
    "--claim-lease",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="How long a claim protects a tick while its job is enqueued (default 10): a scheduler "
    "that dies holding one is replaced this long, plus 3 s, after its claim.",
)
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True)
@click.option("--log-level", default="INFO", show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65_535),
    help="Serve Prometheus metrics on this port at /metrics (needs the otel extra).",
)
def scheduler(
    app_reference: str,
    once: bool,
    claim_lease: float | None,
    log_format: str,
    log_level: str,
    metrics_port: int | None,
) -> int:
    """Fire the recurring schedules of APP (the CloudJobs instance as module:attribute, e.g.
    myapp.jobs:jobs) until SIGTERM or Ctrl-C.

    Run as many as you like: each tick is claimed in the table CLOUDJOBS_IDEMPOTENCY_TABLE names,
    so it is fired once, and a scheduler that dies holding a claim is replaced when the claim lapses
    (13 s by default). Jobs go to the queues CLOUDJOBS_* configures. See docs/scheduling.md.

    \b
    Exit codes:
      0    stopped cleanly (--once: every due tick was fired or skipped)
      1    --once: a tick's enqueue failed (it is fired again by the next run, within its grace)
      2    configuration error (no schedules, no table, a schedule that cannot run)
      130  forced by a second SIGINT; 143 by a second SIGTERM
    """
    from cloudjobs.logs import configure_logging
    from cloudjobs.runtimes.signals import install_stop_signals

    app = load_app(app_reference)
    if not app.schedules:
        raise ConfigurationError(f"{app_reference} declares no schedules (jobs.schedule(...))")
    runner = app.scheduler(claim_lease=timedelta(seconds=claim_lease) if claim_lease is not None else None)
    configure_logging(level=log_level, json_lines=log_format == "json")
    if not serve_metrics(metrics_port):
        return EXIT_USAGE
    if once:
        return EXIT_FAILED if runner.run_pending().failed else EXIT_OK

    def force(received: signal.Signals) -> None:
        # As a shell reports a process ended by the signal; a claim held now lapses by itself.
        raise SystemExit(128 + int(received))

    restore = install_stop_signals(runner.stop, force)
    try:
        runner.run()
    finally:
        restore()
    return EXIT_OK

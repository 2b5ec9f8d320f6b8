"""``cloudjobs worker``: run a worker for the user's CloudJobs app until SIGTERM."""

from __future__ import annotations

from datetime import timedelta

import click

from cloudjobs.cli.apps import load_app
from cloudjobs.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE


@click.command(short_help="Run a worker for an app until SIGTERM.")
@click.argument("app_reference", metavar="APP")
@click.option(
    "--concurrency", type=click.IntRange(min=1), help="Handlers run at once (CLOUDJOBS_CONCURRENCY)."
)
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True)
@click.option("--log-level", default="INFO", show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65_535),
    help="Serve Prometheus metrics on this port at /metrics (needs the otel extra).",
)
@click.option(
    "--health-port",
    type=click.IntRange(min=0, max=65_535),
    help="Serve GET /healthz on this port: 200 while the worker can take work, 503 when it is "
    "stalled (0 picks a free port, logged at start-up).",
)
@click.option(
    "--health-address",
    default="127.0.0.1",
    show_default=True,
    help="Address of the health endpoint (0.0.0.0 for probes from outside the container).",
)
@click.option(
    "--stall-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Report the worker stalled when its receive loop completes no poll for this long "
    "(CLOUDJOBS_STALL_TIMEOUT_SECONDS, default 120).",
)
def worker(
    app_reference: str,
    concurrency: int | None,
    log_format: str,
    log_level: str,
    metrics_port: int | None,
    health_port: int | None,
    health_address: str,
    stall_timeout: float | None,
) -> int:
    """Run a worker for APP (the CloudJobs instance as module:attribute, e.g. myapp.jobs:jobs).

    The worker long-polls the queue configured by CLOUDJOBS_* and runs jobs until SIGTERM or Ctrl-C,
    then finishes running jobs within CLOUDJOBS_SHUTDOWN_TIMEOUT_SECONDS; a second SIGTERM or
    Ctrl-C stops waiting for them.

    \b
    Exit codes:
      0    stopped cleanly
      1    jobs were still running at the shutdown deadline (their messages
           reappear after the visibility timeout)
      2    configuration error (the queue has no dead-letter queue, ...)
      130  forced by a second SIGINT; 143 by a second SIGTERM
    """
    from cloudjobs.logs import configure_logging
    from cloudjobs.runtimes.worker import Worker

    configure_logging(level=log_level, json_lines=log_format == "json")
    if metrics_port is not None:
        from cloudjobs.telemetry.prometheus import serve_prometheus

        try:
            serve_prometheus(metrics_port)
        except ImportError as exc:
            click.echo(f"cloudjobs: {exc}", err=True)
            return EXIT_USAGE
    app = load_app(app_reference)
    report = Worker(
        app,
        concurrency=concurrency,
        stall_timeout=timedelta(seconds=stall_timeout) if stall_timeout is not None else None,
        health_port=health_port,
        health_address=health_address,
    ).run()
    if report.forced_by is not None:
        # As a shell reports a process ended by the signal: 128 + its number.
        return 128 + int(report.forced_by)
    if report.abandoned:
        click.echo(
            f"cloudjobs: {report.abandoned} jobs were still running at the shutdown deadline; their "
            "messages reappear after the visibility timeout",
            err=True,
        )
        return EXIT_FAILED
    return EXIT_OK

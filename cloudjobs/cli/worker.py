"""``cloudjobs worker``: run a worker for the user's CloudJobs app until SIGTERM."""

from __future__ import annotations

import click

from cloudjobs.cli.apps import load_app
from cloudjobs.cli.exit_codes import EXIT_OK, EXIT_USAGE


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
def worker(
    app_reference: str, concurrency: int | None, log_format: str, log_level: str, metrics_port: int | None
) -> int:
    """Run a worker for APP (the CloudJobs instance as module:attribute, e.g. myapp.jobs:jobs).

    The worker long-polls the queue configured by CLOUDJOBS_* and runs jobs until SIGTERM or Ctrl-C,
    then finishes running jobs within CLOUDJOBS_SHUTDOWN_TIMEOUT_SECONDS.
    """
    from cloudjobs.logs import configure_logging

    configure_logging(level=log_level, json_lines=log_format == "json")
    if metrics_port is not None:
        from cloudjobs.telemetry.prometheus import serve_prometheus

        try:
            serve_prometheus(metrics_port)
        except ImportError as exc:
            click.echo(f"cloudjobs: {exc}", err=True)
            return EXIT_USAGE
    app = load_app(app_reference)
    app.worker(concurrency=concurrency).run()
    return EXIT_OK

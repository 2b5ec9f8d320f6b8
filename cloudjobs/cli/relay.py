"""``cloudjobs relay``: send an app's transactional outbox to its queues until SIGTERM."""

from __future__ import annotations

import signal
from datetime import timedelta
from typing import NoReturn

import click

from cloudjobs.cli.apps import load_app
from cloudjobs.cli.exit_codes import EXIT_OK, EXIT_USAGE
from cloudjobs.cli.options import read_duration, serve_metrics


@click.command(short_help="Send an app's transactional outbox to its queues until SIGTERM.")
@click.argument("app_reference", metavar="APP")
@click.option(
    "--database-url",
    required=True,
    envvar="CLOUDJOBS_OUTBOX_DATABASE_URL",
    show_envvar=True,
    help="SQLAlchemy URL of the database holding the outbox "
    "(postgresql+psycopg://user@host/db, sqlite:///path/app.db).",
)
@click.option("--table", default="cloudjobs_outbox", show_default=True, help="The outbox table's name.")
@click.option(
    "--retention",
    default="1d",
    show_default=True,
    callback=read_duration,
    help="How long sent rows stay in the table (30m, 12h, 7d; 0s deletes each row once sent).",
)
@click.option(
    "--poll-interval",
    callback=read_duration,
    help="Longest wait between two looks at the table (default 5s on PostgreSQL, where commits "
    "wake the relay, and 1s on SQLite, reached by backoff).",
)
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True)
@click.option("--log-level", default="INFO", show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65_535),
    help="Serve Prometheus metrics on this port at /metrics (needs the otel extra).",
)
def relay(
    app_reference: str,
    database_url: str,
    table: str,
    retention: timedelta,
    poll_interval: timedelta | None,
    log_format: str,
    log_level: str,
    metrics_port: int | None,
) -> int:
    """Relay the outbox of APP (module:attribute, e.g. myapp.jobs:jobs) from the database.

    Committed rows are sent to the app's queues in batches of ten, in insertion order per message
    group, and marked sent. Several relays may run on PostgreSQL (they share the rows); on SQLite
    one relay runs and the others wait to take over. SIGTERM or Ctrl-C finishes the batch in
    progress and exits; a second one exits at once (the rows of that batch are sent again by the
    next relay, under the same job ids).

    \b
    Exit codes:
      0    stopped cleanly
      2    configuration error (bad URL, missing extra, ...)
      130  forced by a second SIGINT; 143 by a second SIGTERM
    """
    from cloudjobs.logs import configure_logging
    from cloudjobs.runtimes.signals import install_stop_signals

    configure_logging(level=log_level, json_lines=log_format == "json")
    try:
        from sqlalchemy import create_engine
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        from cloudjobs.outbox import Outbox
    except ImportError as exc:
        click.echo(f"cloudjobs: {exc}", err=True)
        return EXIT_USAGE
    if not serve_metrics(metrics_port):
        return EXIT_USAGE
    app = load_app(app_reference)
    try:
        engine = create_engine(database_url)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        click.echo(f"cloudjobs: cannot use --database-url: {exc}", err=True)
        return EXIT_USAGE
    try:
        outbox_relay = Outbox(app, engine, table_name=table).relay(
            retention=retention, poll_interval=poll_interval
        )
        restore = install_stop_signals(outbox_relay.stop, _exit_now)
        try:
            outbox_relay.run()
        finally:
            restore()
    finally:
        engine.dispose()
    return EXIT_OK


def _exit_now(received: signal.Signals) -> NoReturn:
    # As a shell reports a process ended by the signal: 128 + its number. Leaving the pass in
    # progress rolls its transaction back, so its rows are sent again.
    raise SystemExit(128 + int(received))

"""``cloudjobs dashboard``: serve an app's operators' dashboard (``pip install cloudjobs[dashboard]``)."""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta

import click

from cloudjobs.cli.apps import load_app
from cloudjobs.cli.exit_codes import EXIT_OK
from cloudjobs.errors import ConfigurationError

TOKEN_VARIABLE = "CLOUDJOBS_DASHBOARD_TOKEN"  # noqa: S105 (the variable's name, not a secret)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``): only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command(short_help="Serve the operators' dashboard.")
@click.argument("app_reference", metavar="APP")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65_535), default=8080, show_default=True)
@click.option("--read-only", is_flag=True, help="Show no actions; refuse redrive, purge and cancel.")
@click.option(
    "--trace-url",
    metavar="TEMPLATE",
    help="Trace viewer URL with {trace_id}, e.g. https://grafana.example.com/explore?traceId={trace_id}.",
)
@click.option(
    "--sample-interval",
    type=click.FloatRange(min=1),
    default=30,
    show_default=True,
    metavar="SECONDS",
    help="How often the overview's chart samples queue depths.",
)
def dashboard(
    app_reference: str, host: str, port: int, read_only: bool, trace_url: str | None, sample_interval: float
) -> int:
    """Serve the dashboard of APP (module:attribute) until Ctrl-C: queues, dead letters (redrive,
    purge), jobs (status, cancel) and schedules. See docs/dashboard.md.

    Bound to 127.0.0.1 by default. On any other address it refuses to start unless
    CLOUDJOBS_DASHBOARD_TOKEN is set (at least 16 characters): requests must then carry it as a
    Bearer token or as the password of HTTP Basic authentication (the browser asks for it).
    """
    from cloudjobs.dashboard import NoAuth, TokenAuth, create_app

    token = os.environ.get(TOKEN_VARIABLE) or None
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve the dashboard on {host} without authentication: set {TOKEN_VARIABLE} "
            "(or bind to 127.0.0.1 and put an authenticating proxy in front)",
            setting=TOKEN_VARIABLE,
        )
    auth = TokenAuth(token) if token is not None else NoAuth("bound to a loopback address")
    app = load_app(app_reference)
    application = create_app(
        app,
        auth=auth,
        read_only=read_only,
        trace_url=trace_url,
        sample_interval=timedelta(seconds=sample_interval),
    )
    import uvicorn

    click.echo(f"cloudjobs dashboard on http://{host}:{port}/ ({'token' if token else 'loopback only'})")
    uvicorn.run(application, host=host, port=port, log_level="warning")
    return EXIT_OK

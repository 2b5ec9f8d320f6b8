"""Options and parameter types shared by several commands."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_DURATION: Final = re.compile(r"(?P<amount>\d+(?:\.\d+)?)(?P<unit>[smhd])")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


def parse_duration(text: str) -> timedelta:
    """A duration written as a number and a unit: ``30s``, ``15m``, ``12h``, ``7d`` (also ``1.5h``).

    Raises:
        ValueError: the text is not one number followed by one of ``s``, ``m``, ``h``, ``d``.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: write a number and a unit s, m, h or d (e.g. 7d)")
    return timedelta(seconds=float(match["amount"]) * _UNIT_SECONDS[match["unit"]])


def read_duration(ctx: click.Context, param: click.Parameter, value: str | None) -> timedelta | None:
    """A click callback reading a duration option (``7d``) with :func:`parse_duration`.

    Raises:
        click.BadParameter: the value is not a duration.
    """
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def app_option(function: F) -> F:
    """``--app module:attribute``: use the user's CloudJobs instead of one built from the environment."""
    return click.option(
        "--app",
        "app_reference",
        metavar="MODULE:ATTR",
        help="Use this CloudJobs instance (its registered jobs validate payloads and decode DLQ "
        "messages) instead of one built from the CLOUDJOBS_* environment.",
    )(function)


def queue_option(function: F) -> F:
    """``--queue NAME``: one of the app's queues (``CLOUDJOBS_QUEUES``) instead of the default one."""
    return click.option(
        "--queue",
        metavar="NAME",
        help="One of the app's named queues (CLOUDJOBS_QUEUES); default: the default queue.",
    )(function)


def json_option(function: F) -> F:
    """``--json``: print the result as JSON for scripts."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(function)


def serve_metrics(port: int | None) -> bool:
    """Serve Prometheus metrics on ``port`` (``--metrics-port``; None: nothing); False, with the
    extra to install said on stderr, when the exporter is not installed."""
    if port is None:
        return True
    from cloudjobs.telemetry.prometheus import serve_prometheus

    try:
        serve_prometheus(port)
    except ImportError as exc:
        click.echo(f"cloudjobs: {exc}", err=True)
        return False
    return True

"""``cloudjobs enqueue``: send one job from the command line."""

from __future__ import annotations

import json
from typing import Any

import click

from cloudjobs.cli.apps import operator_app
from cloudjobs.cli.exit_codes import EXIT_OK
from cloudjobs.cli.options import app_option, json_option, queue_option
from cloudjobs.cli.output import echo_json
from cloudjobs.errors import UnknownJobError
from cloudjobs.hops import MAX_SCHEDULE_DELAY
from cloudjobs.uniqueness.state import MAX_UNIQUE_WINDOW, MIN_UNIQUE_WINDOW


def _json_payload(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", ctx=ctx, param=param) from None


@click.command(short_help="Enqueue one job with a JSON payload.")
@click.argument("job_type", metavar="TYPE")
@click.argument("payload", metavar="PAYLOAD", callback=_json_payload)
@click.option(
    "--delay",
    type=click.FloatRange(min=0, max=MAX_SCHEDULE_DELAY.total_seconds()),
    default=0,
    help=f"Seconds before the job runs, up to {MAX_SCHEDULE_DELAY.days} days (standard queues only; "
    "past 900 s the job hops until it is due).",
)
@click.option(
    "--allow-unregistered",
    is_flag=True,
    help="With --app, send a TYPE the app does not register (for a consumer elsewhere).",
)
@click.option("--tenant", metavar="KEY", help="The fairness key, sent as the message group.")
@click.option(
    "--unique-for",
    type=click.FloatRange(min=MIN_UNIQUE_WINDOW.total_seconds(), max=MAX_UNIQUE_WINDOW.total_seconds()),
    metavar="SECONDS",
    help="Make the job unique for this long: a repeat of TYPE and --unique-key within the window sends "
    "nothing and prints the first job's id (needs the idempotency table).",
)
@click.option(
    "--unique-key",
    metavar="KEY",
    help="The unique job's key, per job type (default: a hash of the payload); needs --unique-for.",
)
@click.option(
    "--track-status",
    is_flag=True,
    help="Keep a status record (and result) for this job (needs the idempotency table).",
)
@queue_option
@app_option
@json_option
def enqueue(
    job_type: str,
    payload: Any,
    delay: float,
    allow_unregistered: bool,
    tenant: str | None,
    unique_for: float | None,
    unique_key: str | None,
    track_status: bool,
    queue: str | None,
    app_reference: str | None,
    as_json: bool,
) -> int:
    """Enqueue one job of TYPE with PAYLOAD, a JSON document; print its job id.

    With --app, TYPE must be registered by the app (a misspelt type is refused, listing the
    registered ones; --allow-unregistered sends it anyway, unless the app itself refuses
    unregistered types) and its payload is validated first. Without --app, any TYPE is sent.

    A unique job (--unique-for, --unique-key) is reserved in the idempotency table before it is
    sent; the window ends after --unique-for seconds (see docs/limits.md).

    \b
    Example:
        cloudjobs enqueue send_email '{"to": "a@example.com"}' --delay 30
        cloudjobs enqueue sync_contacts '{"account": 7}' --unique-for 600 --unique-key acct-7
    \b
    JSON output: {"job_id": "...", "type": "...", "delay_seconds": 30.0}
    """
    jobs = operator_app(app_reference)
    registry = jobs.registry
    # The app's own refuse_unregistered still applies below; this is the command's stricter default.
    if app_reference is not None and not allow_unregistered and job_type not in registry:
        refusal = UnknownJobError(job_name=job_type, known=sorted(registry))
        raise click.BadParameter(
            f"{refusal}. Pass --allow-unregistered to send it anyway.", param_hint="TYPE"
        )
    if unique_key is not None and unique_for is None:
        raise click.BadParameter("--unique-key needs --unique-for", param_hint="--unique-key")
    job_id = jobs.enqueue(
        job_type,
        payload,
        delay=delay or None,
        queue=queue,
        tenant=tenant,
        unique_for=unique_for,
        unique_key=unique_key,
        track_status=track_status,
    )
    if as_json:
        echo_json({"job_id": job_id, "type": job_type, "delay_seconds": delay})
    else:
        click.echo(f"enqueued {job_type} job {job_id}")
    return EXIT_OK

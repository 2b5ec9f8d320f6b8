"""``cloudjobs schedules``: the recurring schedules an app declares, with their next and last fires."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Final

import click

from cloudjobs.cli.apps import load_app
from cloudjobs.cli.exit_codes import EXIT_OK
from cloudjobs.cli.options import json_option
from cloudjobs.cli.output import echo_json, render_table
from cloudjobs.errors import ConfigurationError

if TYPE_CHECKING:
    from cloudjobs.scheduling.eventbridge import StoredSchedule

_HEADERS: Final = ("NAME", "EXPRESSION", "TIME ZONE", "NEXT FIRES", "LAST FIRE", "MODE")
_SYNC_HEADERS: Final = ("ACTION", "NAME", "EXPRESSION", "TIME ZONE")


@click.group(short_help="List an app's recurring schedules, or sync them to EventBridge Scheduler.")
def schedules() -> None:
    """The recurring schedules an app declares with jobs.schedule(...)."""


@schedules.command(name="sync", short_help="Make EventBridge Scheduler's schedules match the code.")
@click.argument("app_reference", metavar="APP")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@json_option
def sync_schedules(app_reference: str, dry_run: bool, as_json: bool) -> int:
    """Create, update and delete the EventBridge Scheduler schedules of APP's schedule group
    (CLOUDJOBS_SCHEDULE_GROUP) so that they match the schedules APP declares; the one-time
    schedules of delayed jobs are left alone. Needs CLOUDJOBS_SCHEDULES_MODE=eventbridge (so that
    no self-hosted scheduler fires the same ticks) and CLOUDJOBS_SCHEDULER_ROLE_ARN.

    A schedule EventBridge cannot fire as declared (an interval under a minute or not in whole
    minutes, a cron restricting both day fields, overlap='skip') is refused with its reason, and
    then nothing is changed. See docs/scheduling.md.

    \b
    Exit codes:
      0    the group matches the code (--dry-run: the changes were listed)
      1    EventBridge Scheduler refused a change or could not be reached
      2    configuration error (mode, group or role unset, a schedule that cannot be synced)
    """
    from cloudjobs.scheduling.sync import apply_sync, plan_sync, wanted_schedules

    app = load_app(app_reference)
    if app.settings.schedules_mode != "eventbridge":
        raise ConfigurationError(
            "schedules are fired by the self-hosted scheduler: set CLOUDJOBS_SCHEDULES_MODE=eventbridge "
            "to have EventBridge Scheduler fire them (and stop every cloudjobs scheduler)",
            setting="CLOUDJOBS_SCHEDULES_MODE",
        )
    group = app.eventbridge_schedules
    plan = plan_sync(wanted_schedules(app, group.role_arn), group)
    if not dry_run:
        apply_sync(plan, group)
    rows: list[dict[str, str | None]] = [
        *(_change("create", item.name, item) for item in plan.create),
        *(_change("update", item.name, item) for item in plan.update),
        *(_change("delete", name) for name in plan.delete),
        *(_change("unchanged", name) for name in plan.unchanged),
    ]
    if as_json:
        echo_json({"group": group.group, "dry_run": dry_run, "changes": rows})
        return EXIT_OK
    if rows:
        table = [[row["action"], row["name"], row["expression"], row["time_zone"]] for row in rows]
        click.echo(render_table(_SYNC_HEADERS, table))
    verb = "would change" if dry_run else "changed"
    click.echo(
        f"schedule group {group.group}: {verb} {plan.changes} schedule(s), {len(plan.unchanged)} unchanged"
    )
    return EXIT_OK


@schedules.command(name="list", short_help="Schedules with their next and last fires.")
@click.argument("app_reference", metavar="APP")
@click.option(
    "--count",
    type=click.IntRange(min=1, max=100),
    default=3,
    show_default=True,
    help="Next fire times shown per schedule.",
)
@json_option
def list_schedules(app_reference: str, count: int, as_json: bool) -> int:
    """List the schedules of APP (module:attribute): name, expression, time zone, the next fire
    times, the last fire and the mode. Times are in each schedule's time zone.

    The last fire is read from the table CLOUDJOBS_IDEMPOTENCY_TABLE names (one GetItem per
    schedule); without one it shows as unknown.
    """
    from cloudjobs.scheduling.listing import schedule_rows

    app = load_app(app_reference)
    rows = schedule_rows(app, count=count, warn=lambda line: click.echo(f"cloudjobs: {line}", err=True))
    if as_json:
        echo_json(rows)
        return EXIT_OK
    if not rows:
        click.echo(f"{app_reference} declares no schedules")
        return EXIT_OK
    table: list[list[object]] = []
    for row in rows:
        nexts: list[str] = [_text(fire) for fire in row["next_fires"]] or ["never"]
        last = row["last_fire"]
        last_text = "unknown" if row["last_fire_unknown"] else (_text(last) if last is not None else None)
        table.append([row["name"], row["expression"], row["time_zone"], nexts[0], last_text, row["mode"]])
        table.extend(["", "", "", later, "", ""] for later in nexts[1:])
    click.echo(render_table(_HEADERS, table))
    return EXIT_OK


def _change(action: str, name: str, wanted: StoredSchedule | None = None) -> dict[str, str | None]:
    return {
        "action": action,
        "name": name,
        "expression": wanted.expression if wanted else None,
        "time_zone": wanted.timezone if wanted else None,
    }


def _text(moment: datetime) -> str:
    return moment.isoformat(sep=" ", timespec="seconds")

"""``cloudjobs provision``: create a queue and its DLQ with the redrive policy cloudjobs expects, and
optionally the idempotency and status table."""

from __future__ import annotations

import click

from cloudjobs.backends.base import MAX_VISIBILITY_TIMEOUT_SECONDS
from cloudjobs.cli.exit_codes import EXIT_OK
from cloudjobs.provisioning import DEFAULT_MAX_RECEIVE_COUNT, DEFAULT_VISIBILITY_TIMEOUT_SECONDS


@click.command(short_help="Create a queue, its DLQ and optionally the table; print the settings.")
@click.argument("name")
@click.option(
    "--visibility-timeout",
    type=click.IntRange(min=0, max=MAX_VISIBILITY_TIMEOUT_SECONDS),
    default=DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds.",
)
@click.option(
    "--max-receive-count", type=click.IntRange(min=1), default=DEFAULT_MAX_RECEIVE_COUNT, show_default=True
)
@click.option(
    "--table",
    metavar="TABLE",
    help="Also create the idempotency and status table TABLE (as the Terraform module shapes it).",
)
def provision(name: str, visibility_timeout: int, max_receive_count: int, table: str | None) -> int:
    """Create queue NAME (end it in .fifo for a FIFO queue) and its DLQ; print the settings.

    Safe to run again: existing queues are kept and given these attributes, an existing table is
    kept. The output lines are CLOUDJOBS_QUEUE_URL=..., CLOUDJOBS_DLQ_URL=... and, with --table,
    CLOUDJOBS_IDEMPOTENCY_TABLE=..., ready for an environment file.
    """
    from cloudjobs.aws_clients import create_client
    from cloudjobs.backends.sqs import wrap_aws_errors
    from cloudjobs.provisioning import QueueSpec, TableSpec, provision_queue, provision_table

    spec = QueueSpec(
        name=name,
        fifo=name.endswith(".fifo"),
        visibility_timeout_seconds=visibility_timeout,
        max_receive_count=max_receive_count,
    )
    # Both specs are checked before anything is created: a bad table name must not leave queues behind.
    table_spec = TableSpec(table) if table is not None else None
    with wrap_aws_errors(spec.name):
        client = create_client("sqs")
    try:
        queue = provision_queue(spec, client=client)
    finally:
        client.close()
    if table_spec is not None:
        dynamodb = create_client("dynamodb")
        try:
            provision_table(table_spec, client=dynamodb)
        finally:
            dynamodb.close()
    click.echo(f"CLOUDJOBS_QUEUE_URL={queue.queue_url}")
    click.echo(f"CLOUDJOBS_DLQ_URL={queue.dlq_url}")
    if table_spec is not None:
        click.echo(f"CLOUDJOBS_IDEMPOTENCY_TABLE={table_spec.name}")
    return EXIT_OK

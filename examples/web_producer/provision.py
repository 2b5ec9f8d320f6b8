"""Create the example's queue, DLQ and status table; print the variables the service and worker need.

python -m examples.web_producer.provision >> .env
"""

from __future__ import annotations

from cloudjobs.aws_clients import create_client
from cloudjobs.provisioning import QueueSpec, TableSpec, provision_queue, provision_table


def main() -> None:
    """Provision ``reports`` (and ``reports-dlq``) and the table ``reports-status``."""
    sqs = create_client("sqs")
    dynamodb = create_client("dynamodb")
    try:
        queue = provision_queue(QueueSpec("reports"), client=sqs)
        table = TableSpec("reports-status")
        provision_table(table, client=dynamodb)
    finally:
        sqs.close()
        dynamodb.close()
    print(f"CLOUDJOBS_QUEUE_URL={queue.queue_url}")
    print(f"CLOUDJOBS_DLQ_URL={queue.dlq_url}")
    print(f"CLOUDJOBS_IDEMPOTENCY_TABLE={table.name}")
    print("CLOUDJOBS_STATUS_TRACKING=true")


if __name__ == "__main__":
    main()

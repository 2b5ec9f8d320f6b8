"""A Lambda consumer: the SQS event source mapping invokes ``handler`` with batches of jobs.

Deployed by ``terraform/examples/lambda-consumer`` (function handler ``app.handler``, this file at
the root of the package); see README.md beside this file. Producers enqueue with the same ``jobs``.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel

from cloudjobs import CloudJobs, Job, PermanentError, RetryableError

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

# Reads CLOUDJOBS_QUEUE_URL, CLOUDJOBS_DLQ_URL and CLOUDJOBS_IDEMPOTENCY_TABLE (set by the Terraform
# module) on the first invocation; building it here, at import, does no I/O.
jobs = CloudJobs()

SUPPORTED_FORMATS = frozenset({"jpeg", "png", "webp"})


class Thumbnail(BaseModel):
    """Make a thumbnail of an uploaded image."""

    image_key: str
    image_format: str
    width: int = 256


class Receipt(BaseModel):
    """Email the receipt of an order (exactly once per order)."""

    order_id: str
    address: str


@jobs.job("make-thumbnail", timeout=20, max_attempts=5)
def make_thumbnail(payload: Thumbnail, job: Job) -> dict[str, str]:
    """Resizes the image (here: logs it). An unsupported format can never succeed."""
    if payload.image_format not in SUPPORTED_FORMATS:
        raise PermanentError(f"{payload.image_key}: format {payload.image_format!r} is not supported")
    if payload.image_key.startswith("incoming/"):
        # Still being uploaded: try again shortly, without spending the queue's visibility timeout.
        raise RetryableError(f"{payload.image_key} is not complete yet")
    thumbnail_key = f"thumbnails/{payload.width}/{payload.image_key}"
    logger.info("thumbnail %s (job %s, attempt %d)", thumbnail_key, job.id, job.attempt)
    return {"thumbnail_key": thumbnail_key}


@jobs.job("send-receipt", timeout=10, idempotency_key="order_id")
def send_receipt(payload: Receipt) -> None:
    """Sends the receipt (here: logs it); a duplicate delivery of the same order does not resend it."""
    logger.info("receipt of order %s sent to %s", payload.order_id, payload.address)


# The longest job may take 20 s: start a record only while 25 s of the invocation remain (the
# function's timeout is 60 s in the Terraform example), so no job is cut off by the timeout.
handler = jobs.lambda_handler(safety_margin=25)

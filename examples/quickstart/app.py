"""A small cloudjobs app: two jobs, one of them calling out to a flaky service.

Run a worker for it against the local stack (see README.md beside this file):

    cloudjobs worker examples.quickstart.app:jobs
"""

from __future__ import annotations

import logging
import random

from pydantic import BaseModel

from cloudjobs import CloudJobs, Job, PermanentError, RetryableError

jobs = CloudJobs()
logger = logging.getLogger(__name__)


class WelcomeEmail(BaseModel):
    """Send a welcome email to a new user."""

    user_id: int
    address: str


class Webhook(BaseModel):
    """Deliver an event to a customer's endpoint."""

    url: str
    event: str


@jobs.job("welcome-email", timeout=30)
def welcome_email(payload: WelcomeEmail, job: Job) -> dict[str, str]:
    """Sends the email (here: logs it); an invalid address can never succeed."""
    if "@" not in payload.address:
        raise PermanentError(f"user {payload.user_id}: {payload.address!r} is not an email address")
    logger.info("welcome email to %s (job %s, attempt %d)", payload.address, job.id, job.attempt)
    return {"sent_to": payload.address}


@jobs.job("deliver-webhook", max_attempts=6, timeout=10)
def deliver_webhook(payload: Webhook, job: Job) -> None:
    """Posts the event (here: fails at random, as endpoints do); failures retry with backoff."""
    if random.random() < 0.3:
        raise RetryableError(f"{payload.url} answered 503")
    logger.info("delivered %s to %s", payload.event, payload.url)

"""Operating the dead-letter queue: ``jobs.dlq.list()``, ``.redrive()`` and ``.purge()``."""

from __future__ import annotations

from cloudjobs.dlq.models import DeadJob, Progress, RedriveReport, RedriveStop
from cloudjobs.dlq.queue import DeadLetterQueue
from cloudjobs.dlq.queues import DeadLetterQueues

__all__ = ["DeadJob", "DeadLetterQueue", "DeadLetterQueues", "Progress", "RedriveReport", "RedriveStop"]

"""What each page shows, read through the app's own API (the same calls as the command line)."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from cloudjobs.dashboard.chart import Chart, chart_of
from cloudjobs.dashboard.samples import DepthSamples
from cloudjobs.dlq.models import DeadJob
from cloudjobs.envelope import decode
from cloudjobs.errors import CloudjobsError
from cloudjobs.stats import QueueStats

if TYPE_CHECKING:
    from cloudjobs.app import CloudJobs

PAGE_SIZE: Final = 20
MAX_PAYLOAD_CHARACTERS: Final = 4_000
DEFAULT_SAMPLE: Final = 100
"""Dead letters read for the grouped counts (a bounded scan, labelled as a sample)."""


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One queue on the overview."""

    name: str
    stats: QueueStats | None
    error: str | None
    chart: Chart


def overview(jobs: CloudJobs, samples: DepthSamples) -> list[QueueRow]:
    """Every queue's depths and health, read concurrently (two GetQueueAttributes per queue, and
    CloudWatch's oldest-message age where it answers)."""

    def row(name: str) -> QueueRow:
        try:
            return QueueRow(name, jobs.stats(queue=name, include_age=True), None, chart_of(samples.of(name)))
        except CloudjobsError as exc:
            return QueueRow(name, None, str(exc), chart_of(samples.of(name)))

    names = jobs.queue_names
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(names)))) as pool:
        return list(pool.map(row, names))


@dataclass(frozen=True, slots=True)
class Group:
    """Dead letters of one reason and job type in the sample."""

    reason: str
    job_type: str
    count: int


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    """One DLQ message as the page shows it (payload pretty-printed and truncated)."""

    job: DeadJob
    key: str
    payload: str
    is_truncated: bool


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """The dead-letter page of one queue."""

    queue: str
    depth: int | None
    sampled: int
    sample_size: int
    groups: list[Group]
    page: list[DeadLetterView]
    page_number: int
    has_next: bool
    filters: dict[str, str] = field(default_factory=dict)


def dead_letters(
    jobs: CloudJobs,
    queue: str,
    *,
    reason: str | None,
    job_type: str | None,
    page_number: int,
    sample_size: int = DEFAULT_SAMPLE,
) -> DeadLetters:
    """Grouped counts from a bounded sample, and one page of (filtered) messages.

    SQS cannot page a queue: page ``n`` reads ``n`` pages' worth of messages (held invisible while
    read, then released) and shows the last, so a page never reads more than it shows before it;
    messages may move between pages as SQS returns them in its own order. Unfiltered pages within
    the sample are cut from it, with no second read.
    """
    dlq = jobs.dlq.of(queue)
    depth = jobs.stats(queue=queue).dlq_depth
    sample = dlq.list(limit=sample_size)
    counts = Counter((job.reason or "unrecorded", job.type or "unknown") for job in sample)
    groups = [Group(reason, job_type, count) for (reason, job_type), count in counts.most_common()]
    wanted = PAGE_SIZE * page_number + 1  # one more tells whether a next page exists
    if reason is None and job_type is None and (wanted <= len(sample) or len(sample) < sample_size):
        listed = sample  # the sample already holds this page (or the whole DLQ): no second read
    else:
        listed = dlq.list(limit=wanted, job_type=job_type, reason=reason)
    page = listed[PAGE_SIZE * (page_number - 1) : PAGE_SIZE * page_number]
    filters = {name: value for name, value in (("reason", reason), ("type", job_type)) if value}
    return DeadLetters(
        queue=queue,
        depth=depth,
        sampled=len(sample),
        sample_size=sample_size,
        groups=groups,
        page=[_view(job) for job in page],
        page_number=page_number,
        has_next=len(listed) > PAGE_SIZE * page_number,
        filters=filters,
    )


def _view(job: DeadJob) -> DeadLetterView:
    try:
        content: Any = decode(job.body).payload
    except CloudjobsError:
        try:
            content = json.loads(job.body)
        except ValueError:
            content = job.body
    text = content if isinstance(content, str) else json.dumps(content, indent=2, ensure_ascii=False)
    return DeadLetterView(
        job=job,
        key=job.job_id or job.message_id,
        payload=text[:MAX_PAYLOAD_CHARACTERS],
        is_truncated=len(text) > MAX_PAYLOAD_CHARACTERS,
    )

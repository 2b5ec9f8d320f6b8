"""An app's named queues: ``CLOUDJOBS_QUEUES`` and the rules for queue names.

An app has a ``default`` queue (``CLOUDJOBS_QUEUE_URL`` / ``CLOUDJOBS_QUEUE_NAME``, or
``CloudJobs(backend=...)``) and any number of named ones::

    CLOUDJOBS_QUEUES="critical=https://sqs.eu-west-1.amazonaws.com/123456789012/app-critical,bulk=app-bulk"

Each entry is ``NAME=VALUE``; a value starting with ``https://`` (or ``http://``, for local
endpoints) is the queue's URL, anything else its name (its URL is looked up once). Entries are
separated by commas, and spaces around names and values are ignored. The name ``default`` is
reserved for the default queue. A named queue finds its dead-letter queue from its own redrive
policy (``CLOUDJOBS_DLQ_URL`` covers the default queue only).

A queue may also be named by its ARN (``arn:aws:sqs:<region>:<account>:<name>``), as Lambda names the
queue each record comes from: :class:`QueueArn`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Self

DEFAULT_QUEUE: Final = "default"
"""The name of the queue configured by ``CLOUDJOBS_QUEUE_URL`` / ``CLOUDJOBS_QUEUE_NAME``."""

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,79}")

# The domain of SQS's queue URLs in each partition whose URLs are known to take this form:
# https://docs.aws.amazon.com/general/latest/gr/sqs-service.html
_SQS_DOMAINS: Final = {"aws": "amazonaws.com", "aws-us-gov": "amazonaws.com", "aws-cn": "amazonaws.com.cn"}


def check_queue_name(name: str) -> str:
    """Return ``name`` if it may name a queue of an app (1–80 letters, digits, ``-`` and ``_``,
    starting with a letter or digit).

    Raises:
        ValueError: it may not.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"queue name {name!r} must be 1-80 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


def parse_queues(text: str) -> dict[str, str]:
    """The entries of a ``CLOUDJOBS_QUEUES`` value: queue name → URL or queue name.

    Raises:
        ValueError: an entry is not ``NAME=VALUE``, a name is malformed, repeated or ``default``.
    """
    entries: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, separator, value = (piece.strip() for piece in part.partition("="))
        if not separator or not name or not value:
            raise ValueError(f"entry {part.strip()!r} is not NAME=VALUE (a URL or a queue name)")
        if name in entries:
            raise ValueError(f"queue {name!r} is named twice")
        entries[name] = value
    return check_queues(entries)


def check_queues(entries: Mapping[str, str]) -> dict[str, str]:
    """Check the names and values of named queues given in code or parsed from the environment.

    Raises:
        ValueError: a name is malformed or ``default``, or a value is empty.
    """
    for name, value in entries.items():
        check_queue_name(name)
        if name == DEFAULT_QUEUE:
            raise ValueError(
                f"{DEFAULT_QUEUE!r} is the queue of CLOUDJOBS_QUEUE_URL / CLOUDJOBS_QUEUE_NAME; "
                "name the others"
            )
        if not value.strip():
            raise ValueError(f"queue {name!r} has no URL or name")
    return dict(entries)


def is_queue_url(value: str) -> bool:
    """True when a configured value is a queue URL rather than a queue name."""
    return value.startswith(("https://", "http://"))


def queue_name_of(value: str) -> str:
    """The SQS queue name a configured value (a URL or a name) stands for, without any I/O."""
    return value.rstrip("/").rsplit("/", 1)[-1] if is_queue_url(value) else value


@dataclass(frozen=True, slots=True)
class QueueArn:
    """An SQS queue's ARN, ``arn:<partition>:sqs:<region>:<account>:<name>``, in its parts."""

    partition: str
    region: str
    account: str
    name: str

    @classmethod
    def parse(cls, arn: str) -> Self | None:
        """The parts of ``arn``, or None when it does not name an SQS queue."""
        parts = arn.split(":")
        if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs" or "" in parts:
            return None
        return cls(partition=parts[1], region=parts[3], account=parts[4], name=parts[5])

    @property
    def url(self) -> str | None:
        """The queue's URL as GetQueueUrl would return it, in the partitions whose URL form is known
        (None elsewhere: look it up by name). A client sends every call to its configured endpoint,
        with the URL as a parameter, so the URL's host is never connected to."""
        domain = _SQS_DOMAINS.get(self.partition)
        if domain is None:
            return None
        return f"https://sqs.{self.region}.{domain}/{self.account}/{self.name}"

"""Settings, read from ``CLOUDJOBS_*`` environment variables (and a ``.env`` file).

AWS configuration (region, endpoint, credentials, retry mode) is left to boto3's own resolution:
``AWS_REGION``, ``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_SQS`` and the credential chain work as
everywhere else. ``CLOUDJOBS_REGION`` only overrides the region when set.

:class:`SettingsModel` holds every setting and its checks; :class:`Settings` (in
:mod:`cloudjobs.settings_sources`, still importable from here) is the same model read by
pydantic-settings from keyword arguments, the environment and ``.env``. pydantic-settings loads
asyncio, argparse and python-dotenv (~4 MiB, 25-30 ms of a cold start), so :func:`load_settings`,
which a worker and a Lambda cold start call, reads a process without a ``.env`` file itself: the
``CLOUDJOBS_*`` variables, matched without regard to case as pydantic-settings matches them, each
value handed to the model as the string it is (every setting is a scalar, or ``queues``, which
parses its own string). ``tests/unit/test_settings_sources.py`` holds the two readers to the same
results and the same errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cloudjobs.backends.base import (
    MAX_DELAY_SECONDS,
    MAX_MAX_RECEIVE_COUNT,
    MAX_VISIBILITY_TIMEOUT_SECONDS,
    MAX_WAIT_TIME_SECONDS,
)
from cloudjobs.errors import ConfigurationError
from cloudjobs.lazy import lazy_names
from cloudjobs.queues import check_queues, parse_queues

ENV_PREFIX = "CLOUDJOBS_"
DOTENV_FILE = ".env"

if TYPE_CHECKING:
    from cloudjobs.settings_sources import Settings as Settings


class SettingsModel(BaseModel):
    """Every cloudjobs setting; each field reads ``CLOUDJOBS_<FIELD NAME IN CAPITALS>``.

    Build one with :class:`Settings` (keyword arguments over the environment over ``.env``) or
    :func:`load_settings`; ``SettingsModel(...)`` itself takes keyword arguments only.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, validate_default=True)

    queue_url: str | None = Field(default=None, description="URL of the job queue.")
    queue_name: str | None = Field(default=None, description="Name of the job queue (used without a URL).")
    dlq_url: str | None = Field(
        default=None,
        description="Dead-letter queue URL of the default queue; found from its redrive policy if unset.",
    )
    # A string from the environment is parsed by _parse_queues (Settings marks it NoDecode).
    queues: dict[str, str] = Field(
        default_factory=dict,
        description="Named queues besides the default one: comma-separated NAME=VALUE pairs, each "
        "value a queue URL (https:// or http://) or a queue name (see cloudjobs.queues).",
    )
    idempotency_table: str | None = Field(
        default=None, description="DynamoDB table of idempotency and status records."
    )
    idempotency_retention_seconds: int = Field(
        default=604_800,
        ge=3_600,
        description="How long idempotency and status records are kept after their last write (7 days).",
    )
    status_tracking: bool = Field(
        default=False,
        description="The producer writes a pending status record for each job that keeps one "
        "(idempotent or track_status, registered in the producing app); needs PutItem on the table.",
    )
    unique_reservation_seconds: float = Field(
        default=30.0,
        gt=0,
        le=MAX_DELAY_SECONDS,
        description="How long a unique job's reservation stands unconfirmed (its producer died between "
        "the reservation and the send) before another enqueue of the key takes it over and sends the job.",
    )
    max_dlq_depth: int = Field(
        default=0, ge=0, description="Messages the DLQ may hold before jobs.stats() calls it unhealthy."
    )
    max_oldest_age_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Age of the oldest message above which jobs.stats() calls the queue unhealthy.",
    )
    region: str | None = Field(default=None, description="AWS region override; boto3's own otherwise.")
    visibility_timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_VISIBILITY_TIMEOUT_SECONDS,
        description="Visibility on receive; the queue's own if unset.",
    )
    wait_time_seconds: int = Field(
        default=MAX_WAIT_TIME_SECONDS,
        ge=0,
        le=MAX_WAIT_TIME_SECONDS,
        description="Long-poll wait per receive.",
    )
    concurrency: int = Field(default=8, ge=1, le=1024, description="Handlers run at once by a worker.")
    # 8 + 12: two receives of ten fit once the handlers have caught up (see `receivers`).
    prefetch: int = Field(
        default=12, ge=0, le=100, description="Messages a worker holds beyond its concurrency."
    )
    receivers: int = Field(
        default=2,
        ge=1,
        le=8,
        description="Receives a worker may have under way at once on one standard queue (a FIFO "
        "queue has one, for ordering). Beyond the first, a receiver polls only while the queue's "
        "receives come back full (ten messages), they wait on the network rather than on the "
        "process's CPU (a receive's wall time less the CPU every thread of the process used "
        "meanwhile), and the machine has idle CPU (Linux: /proc/stat); it stops as soon as one of "
        "these fails. Each poll takes a full batch of the queue's room (concurrency + prefetch) "
        "first, so a worker never holds more than that. 1: one receive at a time.",
    )
    send_concurrency: int = Field(
        default=4,
        ge=1,
        le=32,
        description="SendMessageBatch requests one enqueue_many keeps in flight on a standard queue "
        "whose round trips wait on the network (1: one after another).",
    )
    # Every attempt is a receive, and SQS's redrive takes at most this many receives.
    max_attempts: int = Field(
        default=5, ge=1, le=MAX_MAX_RECEIVE_COUNT, description="Attempts before the DLQ."
    )
    job_timeout_seconds: float = Field(default=300, gt=0, description="Default handler timeout.")
    backoff_base_seconds: float = Field(default=1.0, gt=0, description="First retry's backoff ceiling.")
    backoff_cap_seconds: float = Field(
        # A backoff is a visibility timeout, so SQS's longest one bounds it.
        default=900.0,
        gt=0,
        le=MAX_VISIBILITY_TIMEOUT_SECONDS,
        description="Largest backoff between attempts.",
    )
    heartbeat_interval_seconds: float | None = Field(
        default=None,
        gt=0,
        description="How often visibility is extended; a third of the visibility if unset.",
    )
    shutdown_timeout_seconds: float = Field(
        default=30.0, ge=0, description="How long a stopping worker waits for running jobs."
    )
    stall_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="How long a worker's receive loop may go without completing a poll before the "
        "worker reports itself stalled (must exceed the long-poll wait).",
    )
    hop_seconds: int = Field(
        default=MAX_DELAY_SECONDS,
        ge=1,
        le=MAX_DELAY_SECONDS,
        description="A job delayed longer than this hops until it is due, each hop at most this long "
        "(SQS's 900 s; shorter only to exercise hops in tests, see cloudjobs.hops).",
    )
    long_delays: Literal["hops", "eventbridge"] = Field(
        default="hops",
        description="How jobs due later than 15 minutes wait: 'hops' (in the queue, no extra "
        "infrastructure) or 'eventbridge' (a one-time EventBridge Scheduler schedule each; see "
        "docs/scheduling.md).",
    )
    schedules_mode: Literal["self-hosted", "eventbridge"] = Field(
        default="self-hosted",
        description="Who fires recurring schedules: 'self-hosted' (cloudjobs scheduler) or "
        "'eventbridge' (EventBridge Scheduler, kept in step by cloudjobs schedules sync).",
    )
    schedule_group: str | None = Field(
        default=None,
        description="EventBridge Scheduler schedule group of the app's schedules (the Terraform "
        "module's, named after the app).",
    )
    scheduler_role_arn: str | None = Field(
        default=None,
        description="Role EventBridge Scheduler assumes to send the app's scheduled messages.",
    )
    payload_bucket: str | None = Field(
        default=None,
        description="S3 bucket for message bodies too large for their queue (sent as pointers in "
        "the format of AWS's SQS extended client libraries; see docs/payloads.md).",
    )
    payload_threshold_bytes: int | None = Field(
        default=None,
        ge=1,
        le=1_048_576,
        description="Bodies larger than this (with their attributes) go to the payload bucket; "
        "default: what fits the queue's MaximumMessageSize.",
    )
    payload_kms_key_id: str | None = Field(
        default=None, description="KMS key for stored bodies (SSE-KMS); SSE-S3 if unset."
    )
    payload_delete: bool = Field(
        default=False,
        description="Delete a stored body once its job completed (default: keep it; the bucket's "
        "lifecycle rule expires it).",
    )
    default_job_type: str | None = Field(
        default=None, description="Job type for messages not sent by cloudjobs (plain JSON bodies)."
    )
    job_type_attribute: str | None = Field(
        default=None, description="Message attribute naming the job type of foreign messages."
    )
    message_group_id: str | None = Field(
        default=None, description="Default MessageGroupId on FIFO queues (the job type if unset)."
    )

    @field_validator("queues", mode="before")
    @classmethod
    def _parse_queues(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_queues(value)
        if isinstance(value, dict):
            return check_queues(value)
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> SettingsModel:
        if self.backoff_base_seconds > self.backoff_cap_seconds:
            raise ValueError("CLOUDJOBS_BACKOFF_BASE_SECONDS must not exceed CLOUDJOBS_BACKOFF_CAP_SECONDS")
        return self

    @property
    def hop(self) -> timedelta:
        """The longest delay of one hop (see :mod:`cloudjobs.hops`)."""
        return timedelta(seconds=self.hop_seconds)

    @property
    def job_timeout(self) -> timedelta:
        """The default handler timeout."""
        return timedelta(seconds=self.job_timeout_seconds)

    @property
    def shutdown_timeout(self) -> timedelta:
        """How long a stopping worker waits for running jobs."""
        return timedelta(seconds=self.shutdown_timeout_seconds)

    @property
    def stall_timeout(self) -> timedelta:
        """How long a worker's receive loop may go without completing a poll before it is stalled."""
        return timedelta(seconds=self.stall_timeout_seconds)

    def heartbeat_interval(self, visibility: timedelta) -> timedelta:
        """The visibility heartbeat's period for a given visibility timeout.

        Raises:
            ConfigurationError: the interval is not well inside the visibility timeout (at most half).
        """
        if self.heartbeat_interval_seconds is None:
            return visibility / 3
        interval = timedelta(seconds=self.heartbeat_interval_seconds)
        if interval * 2 > visibility:
            raise ConfigurationError(
                f"heartbeat every {interval.total_seconds():g}s is not well inside the visibility timeout "
                f"of {visibility.total_seconds():g}s; set it to at most half the visibility timeout "
                "(or raise CLOUDJOBS_VISIBILITY_TIMEOUT_SECONDS)",
                setting=f"{ENV_PREFIX}HEARTBEAT_INTERVAL_SECONDS",
            )
        return interval


def environment_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``CLOUDJOBS_*`` variables of ``environ`` (the process's by default) that name a setting,
    by field name: names match without regard to case, and of two spellings of one name the later
    wins, as in pydantic-settings' environment source."""
    found: dict[str, str] = {}
    fields = SettingsModel.model_fields
    prefix = ENV_PREFIX.lower()
    start = len(prefix)
    for name, value in (os.environ if environ is None else environ).items():
        lowered = name.lower()
        if lowered.startswith(prefix) and lowered[start:] in fields:
            found[lowered[start:]] = value
    return found


def load_settings(*, dotenv: bool = True) -> SettingsModel:
    """Read settings from the environment (and ``./.env`` when ``dotenv`` and the file exists).

    Raises:
        ConfigurationError: a value is malformed; the message names the ``CLOUDJOBS_`` variable.
    """
    try:
        if dotenv and os.path.isfile(DOTENV_FILE):
            from cloudjobs.settings_sources import Settings

            return Settings()
        return SettingsModel.model_validate(environment_values())
    except ValidationError as exc:
        first = exc.errors()[0]
        location = [str(part) for part in first["loc"]]
        setting = f"{ENV_PREFIX}{location[0].upper()}" if location else None
        raise ConfigurationError(first["msg"], setting=setting) from None


# Settings loads pydantic-settings: it is read from its module on first use.
__getattr__, __dir__ = lazy_names(__name__, {"Settings": "cloudjobs.settings_sources"}, ("Settings",))

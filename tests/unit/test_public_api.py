"""The public API: a pinned ``__all__`` and a lean ``import cloudjobs``."""

from __future__ import annotations

import json

import cloudjobs
from tests.fresh import run_fresh

EXPECTED_ALL = [
    "Backend",
    "BackendError",
    "BackendUnavailableError",
    "BatchEnqueueError",
    "Cancelled",
    "CloudJobs",
    "CloudjobsError",
    "Completed",
    "ConfigurationError",
    "CredentialsError",
    "DeadJob",
    "DeadLetter",
    "DecodeError",
    "Deferred",
    "Delivery",
    "EnqueueError",
    "Envelope",
    "Flow",
    "FlowTooLargeError",
    "IdempotencyError",
    "IdempotencyKeyReusedError",
    "IdempotencyStoreError",
    "InvalidDelayError",
    "InvalidFlowError",
    "InvalidGroupIdError",
    "InvalidLimitError",
    "InvalidScheduleError",
    "InvalidUniquenessError",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobHandle",
    "JobNotTrackedError",
    "JobState",
    "JobStatus",
    "JobTimeoutError",
    "LeaseLostError",
    "ManualClock",
    "MemoryBackend",
    "MemoryIdempotencyStore",
    "MessageError",
    "Outcome",
    "PayloadTooLargeError",
    "PayloadValidationError",
    "PermanentError",
    "QueueNotFoundError",
    "RedriveReport",
    "Released",
    "ResultError",
    "ResultTimeoutError",
    "Retry",
    "RetryPolicy",
    "RetryableError",
    "Settings",
    "UnknownJobError",
    "UnknownQueueError",
    "__version__",
    "current_job",
]

# croniter is light, but only apps that declare cron schedules need it: it loads on first use.
HEAVY_MODULES = (
    "boto3",
    "botocore",
    "moto",
    "opentelemetry.sdk",
    "cloudjobs.cli",
    "croniter",
    "sqlalchemy",
    "psycopg",
)


def test_the_public_names_are_exactly_the_pinned_list() -> None:
    assert cloudjobs.__all__ == EXPECTED_ALL


def test_the_public_names_are_sorted() -> None:
    assert cloudjobs.__all__ == sorted(cloudjobs.__all__)


def test_every_public_name_exists() -> None:
    missing = [name for name in cloudjobs.__all__ if not hasattr(cloudjobs, name)]

    assert missing == []


def test_every_error_derives_from_the_one_root() -> None:
    errors = [getattr(cloudjobs, name) for name in cloudjobs.__all__ if name.endswith("Error")]

    assert errors
    assert all(issubclass(error, cloudjobs.CloudjobsError) for error in errors)


def test_importing_cloudjobs_loads_no_aws_sdk_moto_otel_sdk_or_cli() -> None:
    script = (
        "import json, sys\n"
        "import cloudjobs\n"
        f"heavy = {HEAVY_MODULES!r}\n"
        "loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy))\n"
        "print(json.dumps(loaded))\n"
    )

    stdout = run_fresh(script)

    assert json.loads(stdout) == []


def test_the_lean_import_check_would_notice_a_heavy_module() -> None:
    # Guards the test above against passing vacuously (e.g. a script that never looks).
    script = "import json, sys, botocore\nprint(json.dumps('botocore' in sys.modules))\n"

    stdout = run_fresh(script)

    assert json.loads(stdout) is True

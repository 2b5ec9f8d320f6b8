"""The CloudJobs a command works on: the user's (``module:attribute``) or one built from the environment.

Operator commands must answer quickly when AWS is out of reach, so the clients they build connect
with a short timeout and make at most two attempts (unless ``AWS_MAX_ATTEMPTS`` or
``AWS_RETRY_MODE`` say otherwise), where a long-running worker would keep retrying.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Final

from cloudjobs.app import CloudJobs
from cloudjobs.backends.base import Backend
from cloudjobs.errors import ConfigurationError
from cloudjobs.settings import load_settings

CONNECT_TIMEOUT_SECONDS: Final = 3
MAX_ATTEMPTS: Final = 2


def load_app(reference: str) -> CloudJobs:
    """Import ``module:attribute`` (from the working directory too) and return that CloudJobs.

    Raises:
        ConfigurationError: the reference is malformed, cannot be imported, or is not a CloudJobs.
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"expected module:attribute, got {reference!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, CloudJobs):
        raise ConfigurationError(f"{reference!r} is not a CloudJobs instance")
    return app


def operator_app(reference: str | None) -> CloudJobs:
    """The CloudJobs an operator command uses: the user's app, or one built from ``CLOUDJOBS_*``.

    Either way AWS clients give up after :data:`MAX_ATTEMPTS` attempts unless the environment sets
    a retry policy; the app built here also connects with a :data:`CONNECT_TIMEOUT_SECONDS` timeout.

    Raises:
        ConfigurationError: a setting is malformed, no queue is configured, or ``reference`` is bad.
    """
    if "AWS_RETRY_MODE" not in os.environ:
        # botocore reads these when a client is created; this process is ours, so set its defaults.
        os.environ["AWS_RETRY_MODE"] = "standard"
        os.environ.setdefault("AWS_MAX_ATTEMPTS", str(MAX_ATTEMPTS))
    if reference is not None:
        return load_app(reference)
    settings = load_settings()
    if not settings.queue_url and not settings.queue_name and not settings.queues:
        raise ConfigurationError(
            "no queue configured: set CLOUDJOBS_QUEUE_URL or CLOUDJOBS_QUEUE_NAME, or CLOUDJOBS_QUEUES "
            "(or pass --app)",
            setting="CLOUDJOBS_QUEUE_URL",
        )
    from botocore.config import Config

    from cloudjobs.aws_defaults import build_named_sqs_backend
    from cloudjobs.backends.sqs import SqsBackend

    config = Config(connect_timeout=CONNECT_TIMEOUT_SECONDS)
    backend = None
    if settings.queue_url or settings.queue_name:
        backend = SqsBackend(
            queue_url=settings.queue_url,
            queue_name=settings.queue_name,
            dlq_url=settings.dlq_url,
            region=settings.region,
            wait_time_seconds=settings.wait_time_seconds,
            config=config,
        )
    named: dict[str, str | Backend] = {
        name: build_named_sqs_backend(settings, value, config=config)
        for name, value in settings.queues.items()
    }
    return CloudJobs(settings=settings, backend=backend, queues=named)

"""The middleware a consumer gets for records: idempotency for jobs that keep one, cancellation
markers for the rest."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from cloudjobs.clock import Clock
from cloudjobs.definition import JobDefinition
from cloudjobs.middleware import Middleware
from cloudjobs.settings import SettingsModel

# The store protocols load with a store: a consumer on none (a Lambda cold start) never needs them.
if TYPE_CHECKING:
    from cloudjobs.idempotency.base import IdempotencyStore


def record_middleware(
    registry: Mapping[str, JobDefinition],
    settings: SettingsModel,
    *,
    queue_visibility: timedelta,
    clock: Clock,
    store: Callable[[], IdempotencyStore],
    has_store: bool,
) -> list[Middleware]:
    """The idempotency middleware when a job type keeps a record or a store is configured (a job
    enqueued with ``track_status=True`` keeps one whatever its type), then the cancellation
    middleware when the store supports cancellation (markers name jobs with or without a record).

    Args:
        registry: job type → definition.
        settings: the settings in force.
        queue_visibility: the queue's own visibility timeout.
        clock: the time source of the idempotency middleware.
        store: the app's store, built on first call.
        has_store: a store was given or a table is configured (so ``store()`` does not raise).

    Raises:
        ConfigurationError: a job keeps a record and no store is configured.
    """
    middleware: list[Middleware] = []
    if has_store or any(definition.has_record for definition in registry.values()):
        middleware.append(_idempotency_middleware(store(), settings, queue_visibility, clock))
    if not has_store:
        return middleware
    from cloudjobs.idempotency.base import JobControlStore

    control = store()
    if isinstance(control, JobControlStore):
        from cloudjobs.idempotency.cancellation import CancellationMiddleware

        middleware.append(CancellationMiddleware(control))
    return middleware


def _idempotency_middleware(
    store: IdempotencyStore, settings: SettingsModel, queue_visibility: timedelta, clock: Clock
) -> Middleware:
    from cloudjobs.idempotency.middleware import IdempotencyMiddleware, lease_for

    # The worker's visibility and heartbeat, by the same rule: the lease cannot contradict them.
    visibility = (
        timedelta(seconds=settings.visibility_timeout_seconds)
        if settings.visibility_timeout_seconds
        else queue_visibility
    )
    return IdempotencyMiddleware(
        store,
        lease=lease_for(visibility, settings.heartbeat_interval(visibility)),
        retention=timedelta(seconds=settings.idempotency_retention_seconds),
        clock=clock,
    )

"""Message groups: which ``MessageGroupId`` a job is sent with.

On a **standard** queue the group is the job's tenant (``enqueue(..., tenant=)`` or derived by
``@jobs.job(tenant=...)``): SQS's fair queues then keep a noisy tenant's backlog from delaying quiet
tenants' messages (a standard queue with no tenant sends no group). On a **FIFO** queue the group is
``group_id=``, else the tenant, else ``CLOUDJOBS_MESSAGE_GROUP_ID``, else the job type.

SQS takes 1–128 characters of letters, digits and ASCII punctuation
(https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessage.html). An
explicit ``group_id`` outside that is refused; a tenant outside it (an e-mail address with a space,
a name with accents, a long key) is sent as ``sha256-`` and the hex digest of its UTF-8 bytes
(71 characters), so any tenant value works and equal tenants share a group.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Callable
from typing import Any, Final

from cloudjobs.errors import InvalidGroupIdError

MAX_GROUP_ID_LENGTH: Final = 128
"""SQS's longest MessageGroupId."""

_GROUP_ID: Final = re.compile(
    "[" + re.escape(string.ascii_letters + string.digits + string.punctuation) + "]+"
)
_HASHED_PREFIX: Final = "sha256-"

TenantKey = Callable[[Any], object] | str
"""How ``@jobs.job(tenant=...)`` derives a job's tenant: a payload field's name, or a function of the
validated payload (None or a missing field: no tenant)."""


def is_valid_group_id(value: str) -> bool:
    """True when SQS accepts ``value`` as a MessageGroupId."""
    return len(value) <= MAX_GROUP_ID_LENGTH and _GROUP_ID.fullmatch(value) is not None


def group_of_tenant(tenant: str) -> str:
    """The MessageGroupId a tenant is sent as: itself when SQS accepts it, else its hash."""
    if is_valid_group_id(tenant):
        return tenant
    return _HASHED_PREFIX + hashlib.sha256(tenant.encode("utf-8")).hexdigest()


def message_group(
    *,
    is_fifo: bool,
    job_type: str,
    group_id: str | None,
    tenant: str | None,
    default_group_id: str | None,
) -> str | None:
    """The MessageGroupId of one message (None: none is sent).

    Raises:
        InvalidGroupIdError: ``group_id`` is not a valid group id, or it differs from the tenant's
            group when both are given.
    """
    if group_id is not None and not is_valid_group_id(group_id):
        raise InvalidGroupIdError(
            f"group id {group_id[:40]!r} is not 1-{MAX_GROUP_ID_LENGTH} letters, digits and ASCII "
            "punctuation",
            group_id=group_id,
        )
    tenant_group = group_of_tenant(tenant) if tenant is not None else None
    if group_id is not None and tenant_group is not None and group_id != tenant_group:
        raise InvalidGroupIdError(
            f"group_id {group_id!r} and tenant {tenant!r} name different message groups; give one",
            group_id=group_id,
        )
    if not is_fifo:
        return tenant_group
    return group_id or tenant_group or default_group_id or job_type


def tenant_function(name: str, key: TenantKey | None) -> Callable[[Any], str | None] | None:
    """A function of the payload returning the job's tenant, from ``@jobs.job(tenant=...)``."""
    if key is None:
        return None
    if callable(key):
        function = key

        def from_function(payload: Any) -> str | None:
            value = function(payload)
            return None if value is None else str(value)

        return from_function
    if not isinstance(key, str) or not key:
        raise TypeError(f"job {name!r}: tenant takes a field name or a function of the payload")
    field = key

    def from_field(payload: Any) -> str | None:
        value = payload.get(field) if isinstance(payload, dict) else getattr(payload, field, None)
        return None if value is None else str(value)

    return from_field

"""Building boto3 clients the way every cloudjobs component does.

boto3 resolves credentials, endpoint (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``) and retry
mode itself, and cloudjobs leaves that alone. One gap is filled: botocore reads the region from
``AWS_DEFAULT_REGION`` and profiles but not from ``AWS_REGION``, which Lambda, ECS and most tools
set; so an explicit region comes first, then boto3's own, then ``AWS_REGION``.
boto3 is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3


def resolve_region(session: boto3.Session, region: str | None = None) -> str | None:
    """The region a client should use: ``region``, else the session's, else ``AWS_REGION``."""
    return region or session.region_name or os.environ.get("AWS_REGION") or None


def create_client(
    service_name: str,
    *,
    session: boto3.Session | None = None,
    region: str | None = None,
    config: Any = None,
) -> Any:
    """A boto3 client for ``service_name`` (``"sqs"``, ``"dynamodb"``...), region resolved as above."""
    import boto3

    session = session or boto3.session.Session()
    options: dict[str, Any] = {}
    resolved = resolve_region(session, region)
    if resolved is not None:
        options["region_name"] = resolved
    if config is not None:
        options["config"] = config
    return session.client(service_name, **options)  # type: ignore[call-overload]

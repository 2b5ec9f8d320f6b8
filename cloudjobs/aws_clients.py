"""Building boto3 clients the way every cloudjobs component does.

boto3 resolves credentials, endpoint (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``) and retry
mode itself, and cloudjobs leaves that alone. One gap is filled: botocore reads the region from
``AWS_DEFAULT_REGION`` and profiles but not from ``AWS_REGION``, which Lambda, ECS and most tools
set; so an explicit region comes first, then boto3's own, then ``AWS_REGION``.

**One model cache for every client.** Each client gets a session of its own (credentials, region
and configuration resolved afresh, as a new ``boto3.session.Session`` does), but every such session
reads botocore's service and endpoint data through one shared loader: boto3's default session's
when the application's own ``boto3.client(...)`` calls have made one, else cloudjobs' own. A
session's loader keeps the JSON it has read (the endpoint table alone decodes to several MiB), so
without sharing a process holding an SQS and a DynamoDB client would read and keep all of it twice,
and a Lambda function that built an S3 client of its own (at import, as such clients usually are)
would pay cloudjobs' first client ~60 ms of CPU and ~10 MiB instead of ~16 ms and ~1.2 MiB. The
loaded data is read-only; a session passed in by the caller is used as it is.

**JSON responses parsed from a plan.** The sessions made here parse SQS's and DynamoDB's JSON
answers with :class:`cloudjobs.aws_json.PlannedJSONParser`: botocore's answers, for a third of
botocore's CPU on a receive of ten messages with attributes (see that module), and their clients
serialize JSON requests with :class:`cloudjobs.aws_json_requests.PlannedJSONSerializer` (botocore's
requests, byte for byte, for a little over half of botocore's CPU).

boto3 is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3
    from botocore.loaders import Loader

_search_path_lock = threading.Lock()


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
    session = session or new_session()
    options: dict[str, Any] = {}
    resolved = resolve_region(session, region)
    if resolved is not None:
        options["region_name"] = resolved
    if config is not None:
        options["config"] = config
    return session.client(service_name, **options)  # type: ignore[call-overload]


def new_session() -> boto3.Session:
    """A boto3 session of its own that reads botocore's data through the shared loader (see above)."""
    import boto3
    import botocore.session

    from cloudjobs.aws_json import PlannedParserFactory
    from cloudjobs.aws_json_requests import plan_client_requests

    core = botocore.session.Session()
    loader = _shared_loader()
    core.register_component("data_loader", loader)
    # Its clients parse JSON responses through plans kept as long as the session's clients are.
    core.register_component("response_parser_factory", PlannedParserFactory())
    # ...and serialize JSON requests through plans too.
    plan_client_requests(core)
    with _search_path_lock:
        session = boto3.session.Session(botocore_session=core)
        # boto3 adds its own data directory to the loader's search path with every session.
        paths = loader.search_paths
        if len(paths) != len(set(paths)):
            paths[:] = dict.fromkeys(paths)
    return session


def _shared_loader() -> Loader:
    """The data loader the sessions made here read through: that of boto3's default session when the
    process has one (the one the application's own ``boto3.client(...)`` calls made and use), else
    one of cloudjobs' own, made once. No default session is set up here: it would cost a process
    that never uses one ~0.2 MiB."""
    import boto3
    import botocore.session

    default = getattr(boto3.DEFAULT_SESSION, "_session", None)
    if isinstance(default, botocore.session.Session):
        loader: Loader = default.get_component("data_loader")
        return loader
    return _own_loader()


@functools.cache
def _own_loader() -> Loader:
    """The data loader of the sessions made here while the process has no default boto3 session."""
    import botocore.session

    loader: Loader = botocore.session.Session().get_component("data_loader")
    return loader

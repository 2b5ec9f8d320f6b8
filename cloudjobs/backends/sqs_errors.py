"""botocore errors of SQS calls, translated into the :mod:`cloudjobs.errors` tree.

Re-exported by :mod:`cloudjobs.backends.sqs` (``from cloudjobs.backends.sqs import wrap_aws_errors``),
so callers never import botocore to handle an SQS failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import botocore.exceptions

from cloudjobs.aws_errors import setup_error, setup_errors
from cloudjobs.errors import BackendError, BackendUnavailableError, QueueNotFoundError

_QUEUE_NOT_FOUND_CODES: Final = frozenset({"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"})


@contextmanager
def wrap_aws_errors(queue: str | None) -> Iterator[None]:
    """Translate botocore exceptions raised inside the block into :mod:`cloudjobs.errors`.

    Args:
        queue: the queue name (or URL) to record on the error.

    Raises:
        CredentialsError: no credentials were found (or only part of them).
        ConfigurationError: no region is configured, or the named profile does not exist.
        BackendUnavailableError: the endpoint could not be reached or did not answer in time.
        QueueNotFoundError: the queue does not exist.
        BackendError: any other error of the service or of botocore, with the service's ``code``.
    """
    try:
        yield
    except setup_errors() as exc:
        raise setup_error(exc) from exc
    except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
        # ConnectionError covers EndpointConnectionError and ConnectTimeoutError; HTTPClientError covers
        # read timeouts and connections closed mid-response.
        raise BackendUnavailableError(f"SQS endpoint unreachable: {exc}", queue=queue) from exc
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _QUEUE_NOT_FOUND_CODES:
            raise QueueNotFoundError(queue=queue or "") from exc
        raise BackendError(str(exc), queue=queue, code=code or None) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise BackendError(str(exc), queue=queue) from exc

"""Raw message bodies for tests that send what no producer of ours would: envelopes with a payload
or fields given as raw JSON text (``NaN``, 5,000-deep lists, wrong types)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from cloudjobs.envelope import Envelope, encode


def envelope_body(job_type: str, payload: str = "{}", **fields: object) -> str:
    """A cloudjobs envelope whose payload is ``payload`` (raw JSON text, written as is) and whose
    other fields are overridden by ``fields`` (any JSON value, valid or not)."""
    envelope = Envelope(
        id=uuid.uuid4().hex,
        type=job_type,
        payload={},
        correlation_id=uuid.uuid4().hex,
        enqueued_at=datetime.now(UTC),
    )
    body = json.loads(encode(envelope))
    body.update(fields)
    return json.dumps(body).replace('"payload": {}', f'"payload": {payload}')

"""Random identifiers: version 4 UUIDs as text, made without the ``uuid.UUID`` object.

Every enqueue makes two (the job id and, outside a request, the correlation id), and every
idempotent run a lease token; unique jobs, flows, limits and schedules take their ids and tokens
here too, so every random id of the project has one source. ``str(uuid.uuid4())`` builds a ``UUID``
object through its Python ``__init__`` only to format it again: ~3.7 µs a call here, against ~1.4 µs
for the same text made from the random bytes directly. The values are the same kind: 122 random bits
from :func:`os.urandom`, with the version (4) and variant (RFC 4122) bits set, so
``uuid.UUID(text)`` reads them back as ``uuid4()``'s.
"""

from __future__ import annotations

import os
from typing import Final

_CLEAR: Final = ~((0xF000 << 64) | (0xC000 << 48))
"""Clears the version nibble and the two variant bits."""
_SET: Final = (0x4000 << 64) | (0x8000 << 48)
"""Version 4, variant RFC 4122 (``10`` in the top bits of the clock sequence)."""


def random_hex() -> str:
    """A random version 4 UUID as 32 lowercase hex digits (``uuid.uuid4().hex``'s form)."""
    return "%032x" % (int.from_bytes(os.urandom(16), "big") & _CLEAR | _SET)


def random_id() -> str:
    """A random version 4 UUID in its canonical 36-character form (``str(uuid.uuid4())``'s)."""
    digits = random_hex()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"

"""Random identifiers: the same kind of value as ``uuid.uuid4()``'s, in its two text forms."""

from __future__ import annotations

import re
import uuid

from cloudjobs.ids import random_hex, random_id

_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_a_random_id_reads_back_as_a_version_4_uuid_in_canonical_form() -> None:
    ids = [random_id() for _ in range(5_000)]

    assert all(_CANONICAL.fullmatch(text) for text in ids)
    assert all(str(uuid.UUID(text)) == text for text in ids)
    assert {uuid.UUID(text).version for text in ids} == {4}
    assert {uuid.UUID(text).variant for text in ids} == {uuid.RFC_4122}
    assert len(set(ids)) == len(ids)


def test_a_random_hex_is_a_version_4_uuids_hex_form() -> None:
    values = [random_hex() for _ in range(5_000)]

    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in values)
    assert all(uuid.UUID(hex=value).hex == value for value in values)
    assert {uuid.UUID(hex=value).version for value in values} == {4}
    assert {uuid.UUID(hex=value).variant for value in values} == {uuid.RFC_4122}
    assert len(set(values)) == len(values)


def test_every_random_bit_varies() -> None:
    """122 random bits: no position outside the version and variant bits is stuck."""
    values = [int(random_hex(), 16) for _ in range(2_000)]
    ones = 0
    zeros = 0
    for value in values:
        ones |= value
        zeros |= ~value
    fixed = (0xF000 << 64) | (0xC000 << 48)
    every = (1 << 128) - 1
    assert ones & ~fixed & every == ~fixed & every
    assert zeros & ~fixed & every == ~fixed & every

"""The characters SQS refuses, as first_invalid_character finds them: exactly the complement of
what SQS takes (#x9, #xA, #xD, #x20–#xD7FF, #xE000–#xFFFD, #x10000–#x10FFFF)."""

from __future__ import annotations

from cloudjobs.backends.base import first_invalid_character


def _is_taken_by_sqs(code_point: int) -> bool:
    return (
        code_point in (0x9, 0xA, 0xD)
        or 0x20 <= code_point <= 0xD7FF
        or 0xE000 <= code_point <= 0xFFFD
        or 0x10000 <= code_point <= 0x10FFFF
    )


def test_every_basic_plane_character_is_refused_exactly_when_sqs_refuses_it() -> None:
    for code_point in range(0x10000):
        found = first_invalid_character(f"a{chr(code_point)}b", {})
        expected = None if _is_taken_by_sqs(code_point) else f"U+{code_point:04X}"
        assert found == expected, hex(code_point)


def test_characters_beyond_the_basic_plane_are_taken() -> None:
    for code_point in (0x10000, 0x1F600, 0xFFFFF, 0x10FFFF):
        assert first_invalid_character(chr(code_point), {"name": chr(code_point)}) is None


def test_an_attribute_value_is_checked_after_the_body() -> None:
    assert first_invalid_character("fine", {"a": "ok", "b": "x\x00"}) == "U+0000"
    assert first_invalid_character("\uffff", {"b": "x\x00"}) == "U+FFFF"

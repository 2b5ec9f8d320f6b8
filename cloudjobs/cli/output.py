"""Rendering command results: JSON for scripts, aligned plain-text tables for people."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import click

MAX_CELL_WIDTH = 60
"""Longer table cells (error messages, bodies) are cut to this many characters, ending in ``…``."""


def to_json_value(value: Any) -> Any:
    """``value`` with datetimes, timedeltas and enums turned into JSON-friendly values.

    Datetimes become ISO 8601 strings, timedeltas seconds (a float), enums their value; mappings and
    sequences are converted item by item.
    """
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return to_json_value(value.value)
    if isinstance(value, Mapping):
        return {str(key): to_json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_value(item) for item in value]
    return value


def render_json(value: Any) -> str:
    """``value`` as indented JSON with sorted keys (one document, no trailing newline)."""
    return json.dumps(to_json_value(value), indent=2, sort_keys=True, ensure_ascii=False)


def echo_json(value: Any) -> None:
    """Print ``value`` as JSON on standard output."""
    click.echo(render_json(value))


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows under ``headers`` in left-aligned columns two spaces apart (no trailing newline).

    ``None`` shows as ``-``; line breaks inside a cell become spaces and long cells are cut to
    :data:`MAX_CELL_WIDTH` characters, so every row stays on one line.
    """
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = [_line(headers, widths)] + [_line(row, widths) for row in cells]
    return "\n".join(lines)


def format_age(age: timedelta | None) -> str:
    """A duration for people: ``unknown`` for None, else the largest fitting units (``1h 05m``)."""
    if age is None:
        return "unknown"
    seconds = int(age.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        text = value.isoformat(timespec="seconds")
    elif isinstance(value, timedelta):
        text = format_age(value)
    elif isinstance(value, Enum):
        text = str(value.value)
    else:
        text = str(value)
    text = " ".join(text.split())
    if len(text) > MAX_CELL_WIDTH:
        text = text[: MAX_CELL_WIDTH - 1] + "…"
    return text


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

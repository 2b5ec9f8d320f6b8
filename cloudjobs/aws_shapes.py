"""Plans over botocore shapes: one converter per shape, made once and kept.

botocore walks every request it serializes and every answer it parses against the operation's
shape, dispatching on each node's type by name. What the walk does to a value depends only on the
shape, so :mod:`cloudjobs.aws_json` (answers) and :mod:`cloudjobs.aws_json_requests` (requests)
work it out once per shape into a *converter*, a function from value to value, or ``None`` where the
value goes through unchanged. This module holds what the two share: making a shape's plan with
recursion (DynamoDB's ``AttributeValue`` contains itself), and keeping plans by shape.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from botocore.model import Shape, StructureShape

Converter = Callable[[Any], Any]
"""Turns a value into its converted form; ``None`` in a plan means "unchanged"."""


def through(convert: Converter | None, value: Any) -> Any:
    """``value`` converted by ``convert``, or unchanged when there is nothing to convert."""
    return value if convert is None else convert(value)


class ShapePlanner(ABC):
    """Makes one shape's plan; shapes named alike share a converter (a recursive shape refers back
    to the one being made, looked up when it runs). One planner per plan: not thread-safe."""

    def __init__(self) -> None:
        self._made: dict[str, Converter | None] = {}
        self._pending: dict[str, list[Converter | None]] = {}

    def plan(self, shape: Shape) -> Converter | None:
        """The converter for ``shape`` (``None``: values of this shape go through unchanged)."""
        name = shape.name
        if name in self._made:
            return self._made[name]
        pending = self._pending.get(name)
        if pending is not None:
            return lambda value: through(pending[0], value)
        cell: list[Converter | None] = [None]
        self._pending[name] = cell
        convert = self._make(shape)
        cell[0] = convert
        del self._pending[name]
        self._made[name] = convert
        return convert

    def members(self, shape: StructureShape) -> list[tuple[str, str, Converter | None]]:
        """Each member of a structure as (name, wire name, its plan)."""
        return [
            (name, member.serialization.get("name", name), self.plan(member))
            for name, member in shape.members.items()
        ]

    @abstractmethod
    def _make(self, shape: Shape) -> Converter | None:
        """The converter for one shape, planning its members through :meth:`plan`."""


class PlanCache:
    """Plans kept by shape, made by a fresh planner on first use.

    Keyed by identity: an operation model keeps its shapes, and holding the shape here keeps its id
    from being reused by another. Thread-safe: plans are made under a lock and read without one.
    """

    def __init__(self, planner: Callable[[], ShapePlanner]) -> None:
        self._planner = planner
        self._plans: dict[int, tuple[Shape, Converter | None]] = {}
        self._planning = threading.Lock()

    def plan_for(self, shape: Shape) -> Converter | None:
        """The plan for ``shape``, made now if this cache has none."""
        planned = self._plans.get(id(shape))
        if planned is not None:
            return planned[1]
        with self._planning:
            planned = self._plans.get(id(shape))
            if planned is None:
                planned = (shape, self._planner().plan(shape))
                self._plans[id(shape)] = planned
        return planned[1]

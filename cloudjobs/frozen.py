"""Building frozen slotted dataclasses on the consumer's per-message path.

A frozen dataclass's ``__init__`` sets each field with ``object.__setattr__(self, name, value)``: a
name lookup and a wrapper call per field, about 1,500 instructions each on CPython 3.11, which made
the four objects built per message (the delivery, its envelope, the job and the prepared run) half
of the consumer core's own work. Setting each slot through its member descriptor, as
``object.__setattr__`` ends up doing, costs about half as much. The builders that use these setters
take every field, so the object is the one ``__init__`` would build; the classes themselves, and
their ``__init__``, are unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

Setter = Callable[[Any, Any], None]


def slot_setters(cls: type, *names: str) -> tuple[Setter, ...]:
    """The member descriptors' ``__set__`` of a frozen slotted dataclass's fields, in field order.

    Raises:
        TypeError: ``names`` are not all of the class's fields in their order (a field was added or
            moved and its builder not updated).
    """
    fields = tuple(field.name for field in dataclasses.fields(cls))
    if names != fields:
        raise TypeError(f"the builder of {cls.__qualname__} sets {names}, not its fields {fields}")
    return tuple(cls.__dict__[name].__set__ for name in names)

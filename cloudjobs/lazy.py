"""Names a package exports but loads on first access (PEP 562's module ``__getattr__``).

A package that keeps modules off the import path of a worker or a Lambda cold start lists which
module each such name lives in and assigns ``__getattr__, __dir__ = lazy_names(...)``; type checkers
see the names through ``if TYPE_CHECKING:`` imports beside it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Collection, Mapping


def lazy_names(
    package: str, sources: Mapping[str, str], exported: Collection[str], *, default: str | None = None
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: the package's ``__name__``.
        sources: the module each lazily loaded name is read from.
        exported: the package's ``__all__`` (listed by ``dir()`` before they load).
        default: the module of every name in ``exported`` that ``sources`` does not list (None: such
            names are not lazy).

    A name is read from its module once, then kept in the package like any other attribute.
    """

    def load(name: str) -> object:
        module = sources.get(name)
        if module is None and default is not None and name in exported:
            module = default
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def names() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exported))

    return load, names

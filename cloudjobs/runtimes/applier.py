"""The outcome applier moved to :mod:`cloudjobs.applier` (one for every runtime); kept importable here."""

from __future__ import annotations

from cloudjobs.applier import OutcomeApplier as OutcomeApplier

__all__ = ["OutcomeApplier"]

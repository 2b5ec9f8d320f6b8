"""The dashboard's tests serve it with :func:`cloudjobs.dashboard.serving.serving`."""

from __future__ import annotations

from cloudjobs.dashboard.serving import free_port, serving

__all__ = ["free_port", "serving"]

"""The operators' dashboard: ``cloudjobs dashboard app:jobs``, or :func:`create_app` mounted in a
service (``pip install cloudjobs[dashboard]``). Server-rendered pages over the app's own API: queue
depths and health, dead letters by reason with redrive and purge, a job's status with cancel, and
the recurring schedules. See docs/dashboard.md.
"""

from cloudjobs.dashboard.app import create_app
from cloudjobs.dashboard.auth import DashboardAuth, NoAuth, TokenAuth

__all__ = ["DashboardAuth", "NoAuth", "TokenAuth", "create_app"]

"""Global rate and concurrency limits per job type (and per key), held in the idempotency table.

``@jobs.job("send-email", rate_limit="100/m")`` and ``@jobs.job("export", concurrency_limit=5,
limit_key="tenant_id")``. A job over its limit is deferred (not run, not an attempt) until capacity
is expected. The pieces:

- :mod:`cloudjobs.limits.spec`: parsing ``rate_limit`` / ``concurrency_limit`` / ``limit_key`` at
  registration into a :class:`~cloudjobs.limits.spec.JobLimits`;
- :mod:`cloudjobs.limits.base`: the :class:`~cloudjobs.limits.base.Limiter` protocol, its answers
  and the rate arithmetic (GCRA);
- :mod:`cloudjobs.limits.memory` and :mod:`cloudjobs.limits.dynamodb`: the two limiters;
- :mod:`cloudjobs.limits.middleware`: the consumer-side stage that takes, renews and releases them.

Nothing here is imported by ``import cloudjobs`` or by an app without limits; see docs/limits.md.
"""

from __future__ import annotations

from cloudjobs.limits.spec import RateLimit

__all__ = ["RateLimit"]

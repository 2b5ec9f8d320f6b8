"""Unique jobs (``jobs.enqueue(..., unique_for=..., unique_key=...)``): at most one job per key and
window, decided by a conditional write in the idempotency table before anything is sent.

- :mod:`~cloudjobs.uniqueness.state`: the :class:`UniquenessStore` protocol, its answers, the rules.
- :mod:`~cloudjobs.uniqueness.enqueue`: reserve, send, confirm (and take over what was never confirmed).
- :mod:`~cloudjobs.uniqueness.memory`, :mod:`~cloudjobs.uniqueness.dynamodb`: the stores.

Nothing is imported here, so ``import cloudjobs`` stays lean. See docs/limits.md.
"""

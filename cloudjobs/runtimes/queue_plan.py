"""Which of the app's queues a worker consumes, and how it shares its handlers between them.

``jobs.worker(queues=...)`` takes a mapping of weights (``{"critical": 6, "bulk": 1}``: weighted
polling), a list (``["critical", "default"]``: strict order, with a starvation guard) or None (the
default queue alone). ``queue_concurrency={"bulk": 4}`` caps the handler slots one queue may hold at
once. :func:`plan_queues` checks both and returns a :class:`QueuePlan`; see
:mod:`cloudjobs.runtimes.dispatch` for the policies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cloudjobs.errors import ConfigurationError, UnknownQueueError
from cloudjobs.queues import DEFAULT_QUEUE
from cloudjobs.runtimes.dispatch import STRICT_GUARD_EVERY, QueuePolicy, StrictOrderPolicy, WeightedPolicy

WorkerQueues = Mapping[str, int] | Sequence[str]
"""What ``jobs.worker(queues=...)`` takes: weights by queue name, or names in strict order."""


@dataclass(frozen=True, slots=True)
class QueuePlan:
    """The queues a worker consumes and how they share its handlers.

    Attributes:
        names: the queues, in the order given (strict order: most important first).
        weights: each queue's weight with weighted polling; None for strict order (and one queue).
        caps: handler slots a queue may hold at once, for the queues that have a cap.
    """

    names: tuple[str, ...]
    weights: Mapping[str, int] | None = None
    caps: Mapping[str, int] = field(default_factory=dict)

    def policy(self) -> QueuePolicy:
        """A fresh policy object for one run."""
        if self.weights is not None:
            return WeightedPolicy(self.weights)
        return StrictOrderPolicy(self.names)

    def cap_of(self, name: str, concurrency: int) -> int:
        """The handler slots ``name`` may hold at once: its cap, and never more than ``concurrency``."""
        return min(self.caps.get(name, concurrency), concurrency)

    def describe(self) -> str:
        """One line for the start-up log: the queues, their weights or order, and their caps."""
        if self.weights is not None:
            queues = ", ".join(f"{name}={weight}" for name, weight in self.weights.items())
            text = f"{queues} (weighted)" if len(self.names) > 1 else queues
        elif len(self.names) > 1:
            guard = f"lower queues get 1 start in {STRICT_GUARD_EVERY}"
            text = " > ".join(self.names) + f" (strict order; {guard})"
        else:
            text = self.names[0]
        if self.caps:
            text += "; at most " + ", ".join(f"{cap} on {name}" for name, cap in self.caps.items())
        return text


def plan_queues(
    queues: WorkerQueues | None,
    queue_concurrency: Mapping[str, int] | None,
    *,
    known: Callable[[], Sequence[str]],
) -> QueuePlan:
    """Check a worker's ``queues`` and ``queue_concurrency`` against the app's queues.

    Args:
        queues: weights by name, names in strict order, or None (the default queue alone).
        queue_concurrency: handler slots per queue, for the queues to cap.
        known: the app's queue names (read only when ``queues`` names some).

    Raises:
        UnknownQueueError: a name is not one of the app's queues.
        ConfigurationError: ``queues`` is empty, a string, names a queue twice or has a weight that
            is not a positive integer; or ``queue_concurrency`` names a queue the worker does not
            consume or caps one below 1.
    """
    if queues is None:
        plan = QueuePlan((DEFAULT_QUEUE,))
    elif isinstance(queues, str):
        raise ConfigurationError(
            f"queues takes a list of names (strict order) or a mapping of weights, not the string {queues!r}",
            setting="queues",
        )
    elif isinstance(queues, Mapping):
        weights = dict(queues)
        for name, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
                raise ConfigurationError(
                    f"queue {name!r} has weight {weight!r}; weights are positive integers", setting="queues"
                )
        plan = QueuePlan(_known_names(list(weights), known), weights=weights)
    else:
        plan = QueuePlan(_known_names(list(queues), known))
    return QueuePlan(plan.names, plan.weights, _caps(queue_concurrency or {}, plan.names))


def _known_names(names: list[str], known: Callable[[], Sequence[str]]) -> tuple[str, ...]:
    if not names:
        raise ConfigurationError(
            "name at least one queue (or pass None for the default queue)", setting="queues"
        )
    for name in names:
        if not isinstance(name, str):
            raise ConfigurationError(f"queue names are strings, not {name!r}", setting="queues")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigurationError(f"queue {repeated[0]!r} is named twice", setting="queues")
    app_queues = known()
    for name in names:
        if name not in app_queues:
            raise UnknownQueueError(queue=name, known=app_queues)
    return tuple(names)


def _caps(queue_concurrency: Mapping[str, int], names: tuple[str, ...]) -> dict[str, int]:
    for name, cap in queue_concurrency.items():
        if name not in names:
            raise ConfigurationError(
                f"queue_concurrency names {name!r}, which this worker does not consume "
                f"(its queues: {', '.join(names)})",
                setting="queue_concurrency",
            )
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ConfigurationError(
                f"queue {name!r} may hold {cap!r} handler slots; a cap is an integer of at least 1",
                setting="queue_concurrency",
            )
    # In the worker's queue order, so logs and reports read alike.
    return {name: queue_concurrency[name] for name in names if name in queue_concurrency}

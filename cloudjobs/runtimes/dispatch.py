"""Which queue a worker's free handler takes its next job from, and the board it takes it from.

A worker on several queues receives each into its own place on a :class:`Dispatcher`; a handler thread
that comes free takes the next chain (a message, or the messages of one FIFO group) from the queue a
policy picks among those with work waiting and a handler slot free under their cap:

- :class:`WeightedPolicy` (``queues={"critical": 6, "default": 3, "bulk": 1}``): smooth weighted
  round robin. While every queue has work waiting, each gets its weight's share of the handler
  starts, interleaved (6:3:1 gives ``critical`` 6 of every 10 starts, and a waiting critical job
  never waits behind more than one other start); a queue with nothing waiting neither takes nor
  banks a share.
- :class:`StrictOrderPolicy` (``queues=["critical", "default"]``): the first queue with work
  waiting, in the order given, with a starvation guard: after ``guard_every - 1`` starts in a row
  that passed over a waiting lower queue, the next start goes to the lower queue whose oldest chain
  has waited longest. So while lower queues have work waiting they get at least one start in
  ``guard_every`` (default :data:`STRICT_GUARD_EVERY`, 1 in 10) between them, and the queues above
  at most the other nine.

Policies are plain objects, deterministic and free of threads and clocks: "waited longest" is the
order chains arrived at the dispatcher.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Protocol, TypeVar

from cloudjobs.backends.base import Delivery

L = TypeVar("L")

_CHAIN: Final = True
_STOP: Final = False

STRICT_GUARD_EVERY: Final = 10
"""With strict order, lower queues with work waiting get at least one handler start in this many."""


class QueuePolicy(Protocol):
    """Picks the queue the next handler start comes from."""

    def pick(self, ready: Mapping[str, int]) -> str:
        """One of ``ready``: the queues with a chain waiting and a slot free, each with the arrival
        number of its oldest waiting chain (lower: waiting longer). ``ready`` is never empty."""
        ...


class WeightedPolicy:
    """Smooth weighted round robin over the ready queues (nginx's upstream algorithm).

    Each pick adds every ready queue's weight to its credit, takes the queue with the most credit
    (the first configured on a tie) and charges it the ready weights' sum. A queue that is not ready
    has its credit cleared: an idle queue neither saves up a burst nor owes a debt.

    Args:
        weights: queue name → a positive weight.
    """

    def __init__(self, weights: Mapping[str, int]) -> None:
        self._weights = dict(weights)
        self._credit = dict.fromkeys(weights, 0)

    def pick(self, ready: Mapping[str, int]) -> str:
        """The ready queue with the most credit after this round's weights are added."""
        total = 0
        best: str | None = None
        for name, weight in self._weights.items():
            if name not in ready:
                self._credit[name] = 0
                continue
            self._credit[name] += weight
            total += weight
            if best is None or self._credit[name] > self._credit[best]:
                best = name
        assert best is not None, "pick() needs a ready queue"
        self._credit[best] -= total
        return best


class StrictOrderPolicy:
    """The first ready queue in order, with a starvation guard for the ones below it.

    Args:
        order: queue names, most important first.
        guard_every: lower queues with work waiting get one start in this many (at least 2).
    """

    def __init__(self, order: Sequence[str], *, guard_every: int = STRICT_GUARD_EVERY) -> None:
        if guard_every < 2:
            raise ValueError("guard_every must be at least 2")
        self._rank = {name: rank for rank, name in enumerate(order)}
        self._guard_every = guard_every
        self._passed_over = 0

    def pick(self, ready: Mapping[str, int]) -> str:
        """The first ready queue, or the longest-waiting lower one when the guard's turn has come."""
        top = min(ready, key=self._rank.__getitem__)
        if len(ready) == 1:
            self._passed_over = 0
            return top
        if self._passed_over >= self._guard_every - 1:
            self._passed_over = 0
            return min((name for name in ready if name != top), key=ready.__getitem__)
        self._passed_over += 1
        return top


@dataclass(slots=True, eq=False)
class Slot(Generic[L]):
    """One queue's place on the dispatcher. Its counts change under the dispatcher's lock only.

    Attributes:
        name: the queue's name in the app.
        lane: what the worker keeps for the queue (handed back with each chain taken).
        cap: handler slots the queue may hold at once.
        limit: messages the queue may hold at once, waiting or running.
        batch: messages one receive asks for.
        held: messages received and not yet settled or released.
        reserved: room taken by receives under way (a full batch each).
        running: chains on handlers now.
    """

    name: str
    lane: L
    cap: int
    limit: int
    batch: int
    room: threading.Condition
    waiting: deque[tuple[int, list[Delivery]]] = field(default_factory=deque)
    held: int = 0
    reserved: int = 0
    running: int = 0


class Dispatcher(Generic[L]):
    """Chains received and not started, by queue; handler threads take them as the policy picks.

    Receivers wait here for room (a queue's ``held + reserved + batch`` within its ``limit``) and
    take it before they poll, so each receive asks for a full batch and receives under way side by
    side never fill the same room; handlers wait here for a chain whose queue is under its cap.
    Thread-safe.

    Handlers block on a token queue (a ``SimpleQueue``, whose wait costs no Python code): one token
    per waiting chain. A handler whose token finds every waiting chain held back by its queue's cap
    leaves the token owed, and the handler that frees such a cap hands it out again, so a chain
    never waits while a handler is idle and its queue has a slot.

    Args:
        policy: picks the queue when more than one is ready.
    """

    def __init__(self, policy: QueuePolicy) -> None:
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._tokens: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._owed = 0
        self._policy = policy
        self._slots: list[Slot[L]] = []
        self._by_name: dict[str, Slot[L]] = {}
        self._arrivals = itertools.count()
        self._is_closed = False

    def add_queue(self, name: str, lane: L, *, cap: int, limit: int, batch: int) -> Slot[L]:
        """Give a queue its place (before any thread uses the dispatcher)."""
        slot = Slot(name, lane, cap=cap, limit=limit, batch=batch, room=threading.Condition(self._lock))
        self._slots.append(slot)
        self._by_name[name] = slot
        return slot

    @property
    def slots(self) -> list[Slot[L]]:
        """Every queue's place, in the order added."""
        return list(self._slots)

    def wait_for_room(self, slot: Slot[L], timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until a full batch fits in ``slot`` beside what it holds
        and the room other receives under way took; take that room for a receive. False if it does
        not fit (or the dispatcher closed). The room is given back by :meth:`put` or
        :meth:`give_back_room`, so a queue never holds more than its limit."""
        with self._lock:
            if not self._fits(slot) and not self._is_closed:
                slot.room.wait(timeout)
            if self._is_closed or not self._fits(slot):
                return False
            slot.reserved += slot.batch
            return True

    def give_back_room(self, slot: Slot[L]) -> None:
        """A receive that took room (:meth:`wait_for_room`) brought nothing, or failed."""
        with self._lock:
            slot.reserved -= slot.batch
            slot.room.notify_all()

    def put(self, slot: Slot[L], chains: list[list[Delivery]], count: int) -> bool:
        """Add a received batch (``count`` messages in ``chains``) in the room its receive took;
        False once closed (the caller still holds them and must release them)."""
        with self._lock:
            slot.reserved -= slot.batch
            if self._is_closed:
                return False
            slot.held += count
            if self._fits(slot):
                slot.room.notify_all()
            for chain in chains:
                slot.waiting.append((next(self._arrivals), chain))
                self._tokens.put(_CHAIN)
            return True

    @staticmethod
    def _fits(slot: Slot[L]) -> bool:
        return slot.held + slot.reserved + slot.batch <= slot.limit

    def take(self) -> tuple[Slot[L], list[Delivery]] | None:
        """Wait for the next chain the policy picks and count it as running; None once closed."""
        while True:
            if self._tokens.get() is _STOP:
                self._tokens.put(_STOP)  # for the next handler
                return None
            with self._lock:
                if self._is_closed:
                    self._tokens.put(_STOP)
                    return None
                slot = self._choose()
                if slot is not None:
                    slot.running += 1
                    return slot, slot.waiting.popleft()[1]
                # Every waiting chain is held back by its queue's cap: see settled().
                self._owed += 1

    def settled(self, slot: Slot[L], count: int, *, ends_chain: bool = False) -> None:
        """``count`` messages of ``slot`` are no longer held (settled or released); with
        ``ends_chain`` its handler slot is free too."""
        with self._lock:
            slot.held -= count
            if self._fits(slot):
                slot.room.notify_all()
            if ends_chain:
                slot.running -= 1
                if self._owed and slot.waiting:
                    # A chain held back by the cap may start in the slot this one freed: wake a
                    # handler for it.
                    self._owed -= 1
                    self._tokens.put(_CHAIN)
            if self._is_closed:
                self._settled.notify_all()

    def close(self) -> None:
        """Take and put nothing more: waiting handlers and receivers return."""
        with self._lock:
            self._is_closed = True
            self._tokens.put(_STOP)
            for slot in self._slots:
                slot.room.notify_all()

    def unstarted(self) -> list[tuple[Slot[L], list[Delivery]]]:
        """Remove every waiting chain and return them, by queue (they stay held until
        :meth:`settled`)."""
        with self._lock:
            taken: list[tuple[Slot[L], list[Delivery]]] = []
            for slot in self._slots:
                messages = [delivery for _, chain in slot.waiting for delivery in chain]
                slot.waiting.clear()
                if messages:
                    taken.append((slot, messages))
            return taken

    def wait_settled(self, deadline: float, *, is_forced: Callable[[], bool]) -> int:
        """After :meth:`close`, wait until nothing is held, ``is_forced()`` or the
        ``time.monotonic()`` deadline passes; returns the messages still held."""
        with self._lock:
            while (held := sum(slot.held for slot in self._slots)) > 0 and not is_forced():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._settled.wait(min(0.25, remaining))
            return held

    def _choose(self) -> Slot[L] | None:
        if len(self._slots) == 1:
            only = self._slots[0]
            return only if only.waiting and only.running < only.cap else None
        ready = {
            slot.name: slot.waiting[0][0] for slot in self._slots if slot.waiting and slot.running < slot.cap
        }
        if not ready:
            return None
        return self._by_name[self._policy.pick(ready)]

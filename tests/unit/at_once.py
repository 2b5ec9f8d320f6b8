"""Run one piece of work in several threads released together, for tests of thread safety."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def results_at_once(threads: int, work: Callable[[], Iterable[T]]) -> list[T]:
    """Everything ``work`` yields in each of ``threads`` threads, started behind one barrier."""
    start = threading.Barrier(threads)
    results: list[T] = []

    def run() -> None:
        start.wait()
        results.extend(work())  # list methods are safe for concurrent callers

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results

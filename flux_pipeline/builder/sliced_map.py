"""A function over many items on a few threads, handed out in slices: a task (and a future)
per slice, not per item, so a partition's thousands of keys do not each hold a future.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

__all__ = ["sliced_map"]

T = TypeVar("T")
R = TypeVar("R")

#: Slices per thread: enough for threads that finish early to take over slow slices' work.
SLICES_PER_THREAD: Final = 4


def sliced_map(fn: Callable[[T], R], items: Sequence[T], *, threads: int) -> list[R]:
    """``[fn(item) for item in items]``, in order, run on ``threads`` threads."""
    size = -(-len(items) // (threads * SLICES_PER_THREAD)) or 1

    def run(start: int) -> list[R]:
        return [fn(item) for item in items[start : start + size]]

    with ThreadPoolExecutor(threads) as pool:
        return [result for part in pool.map(run, range(0, len(items), size)) for result in part]

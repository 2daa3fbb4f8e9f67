"""``sliced_map``: every item, in order, in a few tasks on the threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from flux_pipeline.builder.sliced_map import SLICES_PER_THREAD, sliced_map


@pytest.mark.parametrize("items", [0, 1, 7, 4000])
def test_every_item_in_order_in_at_most_a_few_slices_per_thread(
    items: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = []
    submit = ThreadPoolExecutor.submit

    def counted(pool: ThreadPoolExecutor, fn: Any, /, *args: Any) -> Any:
        tasks.append(args)
        return submit(pool, fn, *args)

    monkeypatch.setattr(ThreadPoolExecutor, "submit", counted)
    workers = set()

    def square(n: int) -> int:
        workers.add(threading.get_ident())
        return n * n

    assert sliced_map(square, range(items), threads=8) == [n * n for n in range(items)]
    assert len(tasks) <= min(items, 8 * SLICES_PER_THREAD)
    assert threading.get_ident() not in workers  # run on the pool's threads

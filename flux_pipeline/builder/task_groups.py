"""Groups of asyncio tasks for one build: watched background tasks, and a bounded pool."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["BoundedTasks", "WatchedTasks"]

T = TypeVar("T")


class WatchedTasks:
    """Tasks of one build: the first failure of a watched task is raised by :meth:`until`."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failed: asyncio.Future[None] | None = None

    def spawn(self, work: Coroutine[Any, Any, T], *, watch: bool = True) -> asyncio.Task[T]:
        """Start ``work``; with ``watch``, its failure makes :meth:`until` raise."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        if watch:
            task.add_done_callback(self._check)
        return task

    def _check(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            failed = self._failure()
            if not failed.done():
                failed.set_exception(task.exception())  # type: ignore[arg-type]

    def _failure(self) -> asyncio.Future[None]:
        if self._failed is None:
            self._failed = asyncio.get_running_loop().create_future()
        return self._failed

    async def until(self, work: Awaitable[T]) -> T:
        """Await ``work``, unless a watched task fails first: then raise its error."""
        job = asyncio.ensure_future(work)
        failed = self._failure()
        await asyncio.wait((job, failed), return_when=asyncio.FIRST_COMPLETED)
        if failed.done() and not job.done():
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
        if failed.done():
            failed.result()
        return job.result()

    async def close(self) -> None:
        """Cancel what is still running and wait for it."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._failed is not None and self._failed.done():
            self._failed.exception()  # retrieved: no "never retrieved" warning


class BoundedTasks:
    """At most ``limit`` tasks at once; the first failure is kept and stops new starts."""

    def __init__(self, limit: int) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    async def start(self, work: Callable[[T], Awaitable[None]], arg: T) -> None:
        """Run ``work(arg)`` once a slot is free; raise the first failure so far instead."""
        self.raise_failure()
        await self._slots.acquire()
        task = asyncio.create_task(self._guard(work, arg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, work: Callable[[T], Awaitable[None]], arg: T) -> None:
        try:
            await work(arg)
        except Exception as exc:
            self._failure = self._failure or exc
        finally:
            self._slots.release()

    async def wait(self) -> None:
        """Wait for the running tasks (their failures are kept, not raised)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def raise_failure(self) -> None:
        """Raise the first failure of a task, if any."""
        if self._failure is not None:
            raise self._failure

"""Run an asyncio build on a worker thread while its events are handled on the calling thread.

Callbacks (Dagster logging, materialization events) then never stall the event loop that keeps
the jobs in flight polled, and they run on the thread that called the build, as callers expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

R = TypeVar("R")

Emit = Callable[[Any], None]


def run_on_worker_loop(
    main: Callable[[Emit], Coroutine[Any, Any, R]], handle: Callable[[Any], None]
) -> R:
    """Run ``main(emit)`` on a new event loop in a worker thread; call ``handle(event)`` here,
    in order, for every ``emit(event)``. Returns what ``main`` returns, or raises what it raised.

    An exception on this thread (a failing ``handle``, a Dagster run termination, Ctrl-C)
    cancels ``main``, waits for it to wind down (jobs already sent are seen through), then
    propagates.
    """
    events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    started = threading.Event()
    running: dict[str, Any] = {}

    async def guarded() -> R:
        running["loop"], running["task"] = asyncio.get_running_loop(), asyncio.current_task()
        started.set()
        return await main(lambda event: events.put(("event", event)))

    def target() -> None:
        try:
            events.put(("done", asyncio.run(guarded())))
        except BaseException as exc:  # handed to the calling thread, which re-raises it
            events.put(("error", exc))
        finally:
            started.set()

    thread = threading.Thread(target=target, name="flux-build-loop", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = events.get()
            if kind == "event":
                handle(value)
            elif kind == "done":
                result: R = value
                return result
            else:
                raise value
    except BaseException:
        started.wait()
        if "task" in running:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                running["loop"].call_soon_threadsafe(running["task"].cancel)
        while thread.is_alive() or not events.empty():
            with contextlib.suppress(queue.Empty):
                if events.get(timeout=0.1)[0] != "event":
                    break
        raise
    finally:
        thread.join()

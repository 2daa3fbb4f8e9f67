"""Feeding batches of requests through the shared engine and keeping each result.

:meth:`Feeding.run_batch` hands a batch to the engine lazily: a key whose claim was found taken
over before it reaches the engine is not sent but waited on. Each result is kept as it arrives
(at most ``writers`` at once, bounding the image bytes held in memory): its image is written
atomically to ``images/partition=KEY/{prompt_id}-{image_id}.{ext}`` of the partition the job was
sent for, then the ledger records it (:func:`~flux_pipeline.builder.outcomes.store_result`), and
the key's claim is let go: forgotten when its outcome is final, else released so another run may
try it at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from contextlib import aclosing

from flux_pipeline.builder.outcomes import store_result
from flux_pipeline.builder.range_state import RangeState
from flux_pipeline.builder.task_groups import BoundedTasks
from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.segmind import GenerationResult, SegmindEngine

__all__ = ["Feeding"]


class Feeding:
    """Sends batches through one open engine and stores their results."""

    def __init__(self, state: RangeState, engine: SegmindEngine, *, writers: int) -> None:
        self.state = state
        self.engine = engine
        #: Results being hashed and written at once.
        self.writers = writers

    async def run_batch(self, batch: list[GenerationRequest], fed: asyncio.Event) -> None:
        """Send ``batch`` through the shared engine; ``fed`` is set once every request of it
        is in the engine's window (or the batch ended)."""
        state = self.state
        attach = {
            r.request_key: sent.attach_id
            for r in batch
            if (sent := state.sent[r.request_key]).attach_id
        }
        unanswered = {
            r.request_key: sent.unanswered_at
            for r in batch
            if (sent := state.sent[r.request_key]).unanswered_at
        }

        lost: set[str] = set()
        queue = deque(batch)

        def feed() -> Iterator[GenerationRequest]:
            """The batch, lazily: a key whose claim was taken over meanwhile is waited on."""
            state.queues.append(queue)
            try:
                while queue:
                    request = queue.popleft()
                    if request.request_key in state.held:
                        yield request
                    else:
                        lost.add(request.request_key)
                        state.wait_on(request)
            finally:
                state.queues.remove(queue)
            fed.set()

        writers = BoundedTasks(self.writers)
        try:
            # Close the stream here so its jobs are cancelled before the client closes.
            results_of = self.engine.generate(feed(), attach=attach, unanswered=unanswered)
            async with aclosing(results_of) as results:
                async for result in results:
                    await writers.start(self._keep, result)
        except BaseException:
            await writers.wait()
            raise
        finally:
            fed.set()
        await writers.wait()
        writers.raise_failure()
        missing = [
            r.key
            for r in batch
            if r.request_key not in lost and not state.sent[r.request_key].outcome.done()
        ]
        if missing:
            raise RuntimeError(f"the engine returned no result for {missing}")

    async def _keep(self, result: GenerationResult) -> None:
        state = self.state
        key = result.request.request_key
        sent = state.sent[key]
        outcome = await asyncio.to_thread(
            store_result, state.store, state.ledger, result, sent.partition, sent.submitted_at
        )
        if outcome.final:  # in the ledger: its claim blocks nobody
            state.held.forget([key])
        else:  # another run may try it at once
            await state.held.release([key])
        state.tally.generated += 1
        sent.attempts = result.attempts
        sent.outcome.set_result(outcome)

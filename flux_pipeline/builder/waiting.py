"""Waiting on the keys other live runs hold, and taking over the claims of dead ones.

A key whose claim another live run holds is not sent but put in
:attr:`RangeState.waiting <flux_pipeline.builder.range_state.RangeState.waiting>`. One background
task (:meth:`Waiting.watch_forever`) reads the ledger for those keys ``poll`` seconds after they
join, then at intervals doubling up to a quarter of the lease while nothing changes; it reuses
what the other run finished without paying, and only for the keys still unfinished reads their
claims: a claim whose holder died (or that was released with no final outcome, e.g. a
retryable failure) is taken over and its key sent in a new batch of the same engine. A failed
look is logged and tried again; the build fails once other runs' keys have gone unread for a
whole lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from flux_pipeline.builder.feeding import Feeding
from flux_pipeline.builder.range_state import RangeState
from flux_pipeline.builder.routing import Routing, finished_since
from flux_pipeline.store.storage import StorageError

__all__ = ["Waiting"]

log = logging.getLogger(__name__)


class Waiting:
    """Watches the keys other runs hold: reuses their outcomes or takes their claims over."""

    def __init__(
        self, state: RangeState, routing: Routing, feeding: Feeding, *, poll: float
    ) -> None:
        self.state = state
        self.routing = routing
        self.feeding = feeding
        #: Seconds before the first look at keys that joined (then doubling).
        self.poll = poll

    async def watch_forever(self) -> None:
        """Look at the keys other live runs hold ``poll`` s after they join, then at intervals
        doubling up to a quarter of the lease while nothing changes. A failed look is logged
        and tried again; none succeeding for a whole lease fails the build."""
        state, held = self.state, self.state.held
        loop = asyncio.get_running_loop()
        delay, looked = self.poll, loop.time()
        due = looked + delay
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.joined.wait(), max(0.0, due - loop.time()))
            if state.joined.is_set():
                state.joined.clear()
                delay, due = self.poll, min(due, loop.time() + self.poll)
                continue
            try:
                changed = await self._look() if state.waiting else False
            except Exception as exc:  # s3fs/botocore raise more than OSError
                if loop.time() - looked > held.lease:
                    raise StorageError(
                        f"could not read the claims or ledger entries of {len(state.waiting)} "
                        f"request key(s) other runs hold for {held.lease:g} s: {exc}"
                    ) from exc
                log.warning("could not look at keys other runs hold (%s); trying again", exc)
                due = loop.time() + delay
                continue
            looked = loop.time()
            delay = delay if changed else min(2 * delay, held.renew_every)
            due = looked + delay

    async def _look(self) -> bool:
        """Reuse what other runs finished; read the claims of the keys still unfinished and
        take over (claim and send) those no live run holds. True if any key was resolved."""
        state = self.state
        waiting, sent = state.waiting, state.sent
        keys = list(waiting)
        entries = await asyncio.to_thread(state.ledger.get_many, keys)
        reused = 0
        for key in keys:
            outcome = finished_since(sent[key], entries.get(key))
            if outcome is not None and key in waiting:
                del waiting[key]
                sent[key].from_other_run = True
                sent[key].outcome.set_result(outcome)
                reused += 1
        if reused:
            log.info("reused the outcome of %d request key(s) another run finished", reused)
        # A holder that finishes between the two reads looks free: the claim is then taken and
        # confirm reads the ledger again, so its outcome is still reused, not paid again.
        left = [k for k in keys if k in waiting]
        free = await asyncio.to_thread(state.held.not_held_live, left) if left else []
        taken = [k for k in free if k in waiting]
        if not taken:
            return reused > 0
        mine, _ = await state.held.claim(taken)
        if not mine:  # another run took them over first: keep waiting
            return reused > 0
        requests = [waiting.pop(k) for k in taken if k in mine]
        log.info("taking over %d request key(s) whose claim holder is gone", len(requests))
        try:
            batch = await self.routing.confirm(requests)
        except BaseException:  # nothing was resolved: look at them again next time
            waiting.update((r.request_key, r) for r in requests)
            raise
        if batch:
            state.tasks.spawn(self.feeding.run_batch(batch, asyncio.Event()))
        return True

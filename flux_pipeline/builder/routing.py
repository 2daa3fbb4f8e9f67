"""Routing a partition's keys: which ones this run sends, which it waits on.

Claims (:mod:`flux_pipeline.store.claims`) make every request key submitted once across
concurrent runs. :meth:`Routing.route` registers the keys a partition attaches or submits (in
:attr:`RangeState.sent <flux_pipeline.builder.range_state.RangeState.sent>`) and claims them: a key
whose claim another live run holds is not sent but waited on
(:mod:`flux_pipeline.builder.waiting`). :meth:`Routing.confirm` then reads the ledger again for the
keys just claimed (another run may have finished one in between: reused, not paid) and returns
what is left to send, with the request id to attach to where one is recorded.
"""

from __future__ import annotations

import asyncio
import logging

from flux_pipeline.builder.outcomes import Outcome, entry_outcome
from flux_pipeline.builder.planning import PartitionPlan
from flux_pipeline.builder.range_state import RangeState, Sent
from flux_pipeline.protocol import COMPLETED, FAILED, GenerationRequest
from flux_pipeline.store.ledger import SENDING, SUBMITTED, LedgerEntry

__all__ = ["Routing", "finished_since"]

log = logging.getLogger(__name__)


class Routing:
    """Claims the keys of each partition and confirms them against the ledger."""

    def __init__(self, state: RangeState) -> None:
        self.state = state

    async def route(self, plan: PartitionPlan) -> list[GenerationRequest]:
        """Register the keys this partition attaches or submits and claim them; return those
        to send now (the others are waited on, or were finished by another run meanwhile)."""
        state = self.state
        wanted = {k.request_key: k for k in plan.keys if k.action in ("attach", "submit")}
        if not wanted:
            return []
        loop = asyncio.get_running_loop()
        for key in wanted.values():
            state.sent[key.request_key] = Sent(plan.partition, loop.create_future(), key.entry)
        created: set[str] = set()
        mine, others = await state.tasks.until(state.held.claim(wanted, created))
        if others:
            log.info(
                "partition %s: %d request key(s) are claimed by another live run: waiting for "
                "its results",
                plan.partition,
                len(others),
            )
        for request_key in others:
            state.wait_on(wanted[request_key].leader)
        return await self.confirm([wanted[k].leader for k in wanted if k in mine], created)

    async def confirm(
        self, claimed: list[GenerationRequest], created: set[str] | frozenset[str] = frozenset()
    ) -> list[GenerationRequest]:
        """Read the ledger again for freshly claimed keys: reuse what another run finished
        since the plan, attach to a recorded id, and return what is left to send. A key in
        ``created`` (its first claim ever: no run has sent it) keeps the entry the plan read."""
        state = self.state
        again = [r.request_key for r in claimed if r.request_key not in created]
        entries = await state.tasks.until(asyncio.to_thread(state.ledger.get_many, again))
        batch, finished = [], []
        for request in claimed:
            sent = state.sent[request.request_key]
            entry = (
                sent.seen if request.request_key in created else entries.get(request.request_key)
            )
            outcome = finished_since(sent, entry)
            if outcome is not None:
                sent.from_other_run = True
                sent.outcome.set_result(outcome)
                finished.append(request.request_key)
                continue
            if entry is not None and entry.state == SUBMITTED and entry.request_id:
                sent.attach_id, sent.submitted_at = entry.request_id, entry.submitted_at
            elif entry is not None and entry.state == SENDING:
                sent.unanswered_at = entry.submitted_at
            batch.append(request)
        state.held.forget(finished)  # final in the ledger: their claims block nobody
        return batch


def finished_since(sent: Sent, entry: LedgerEntry | None) -> Outcome | None:
    """The outcome of a finished entry written since the plan read ``sent.seen``."""
    if entry is None or entry.lineage is None or entry == sent.seen:
        return None
    if entry.state == COMPLETED and entry.image_path:
        return entry_outcome(entry, entry.image_path)
    return entry_outcome(entry, None) if entry.state == FAILED else None

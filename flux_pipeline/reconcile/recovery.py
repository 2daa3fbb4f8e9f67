"""``--recover``: the images paid for and never stored, fetched into their partition when their
request key is still wanted there, claiming the key as a build does.

A key is still wanted when the partition it was sent for still asks for it (its requests from
the prompt table) and no image is stored for it yet. The request id found in the record is
attached to (its result while the service keeps it, then the record's ``generation_url``,
checked like any output); the image and its ledger entry are written as a build writes them,
so the next build of the partition reuses it without an API call. The lineage is not touched.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence

from flux_pipeline.builder.outcomes import store_result
from flux_pipeline.protocol import COMPLETED, GenerationRequest
from flux_pipeline.reconcile.evidence import Evidence
from flux_pipeline.reconcile.states import ReconciledRequest
from flux_pipeline.segmind import EngineConfig, SegmindEngine
from flux_pipeline.store.claims import Claims
from flux_pipeline.store.ledger import Ledger
from flux_pipeline.store.storage import ObjectStore


def still_wanted(
    rows: Sequence[ReconciledRequest],
    evidence: Evidence,
    wanted: Callable[[str], Mapping[str, GenerationRequest]],
) -> dict[str, tuple[ReconciledRequest, GenerationRequest]]:
    """``{request key: (row, request)}`` of the paid, completed, unstored requests whose
    partition still asks for their key (``wanted(partition)``: its requests by key) and has no
    image for it; the first such request of a key."""
    chosen: dict[str, tuple[ReconciledRequest, GenerationRequest]] = {}
    asked: dict[str, Mapping[str, GenerationRequest]] = {}
    for row in rows:
        if row.state != "paid_not_stored" or row.record_status != COMPLETED:
            continue
        if row.request_key is None or row.partition is None or row.request_key in chosen:
            continue
        if row.partition not in asked:
            asked[row.partition] = wanted(row.partition)
        request = asked[row.partition].get(row.request_key)
        latest = evidence.latest.get(row.request_key)
        if request is None or (latest is not None and latest.state == COMPLETED):
            continue
        chosen[row.request_key] = (row, request)
    return chosen


def recover(
    store: ObjectStore,
    ledger: Ledger,
    config: EngineConfig,
    chosen: Mapping[str, tuple[ReconciledRequest, GenerationRequest]],
) -> list[str]:
    """Fetch and store the images of ``chosen`` whose key this process can claim; returns the
    request ids whose image is now stored."""
    claims = Claims(store)
    mine, _others = claims.claim_many(chosen)
    try:
        return asyncio.run(_fetch(store, ledger, config, {k: chosen[k] for k in sorted(mine)}))
    finally:
        claims.release(mine)
        claims.end()


async def _fetch(
    store: ObjectStore,
    ledger: Ledger,
    config: EngineConfig,
    chosen: Mapping[str, tuple[ReconciledRequest, GenerationRequest]],
) -> list[str]:
    stored: list[str] = []
    attach = {key: row.request_id for key, (row, _) in chosen.items()}
    requests = [request for _, request in chosen.values()]
    # Attach only: a request the record no longer shows is not submitted again here.
    async with SegmindEngine(config.replace(max_new_images=0)) as engine:
        async for result in engine.generate(requests, attach=attach):
            key = result.request.request_key
            row = chosen[key][0]
            if result.status != COMPLETED or result.request_id != row.request_id:
                continue  # not the paid image (expired everywhere): nothing new is paid here
            kept = dataclasses.replace(result, recovered_from="history")
            outcome = await asyncio.to_thread(
                store_result, store, ledger, kept, row.partition or "", row.created_at
            )
            if outcome.path is not None:
                stored.append(row.request_id)
    return stored

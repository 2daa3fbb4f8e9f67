"""Build partitions: engine -> object storage -> ledger -> lineage, streaming.

:func:`build_partitions` builds a range of partitions with one :class:`SegmindEngine` (one
pacer, one in-flight window, a key shared by several partitions sent once);
:func:`build_partition` is its one-partition form. :class:`_RangeBuild` walks each partition
through plan -> reuse -> route -> feed -> finish (the units of this package, see
docs/ARCHITECTURE.md) and plans the next partition while the previous one's requests are still
being fed, so the window stays full across partitions. The tunables (``WRITERS``, ``COPIERS``,
``WAIT_POLL``, ``CLAIM_LEASE``) are read from here when a build starts.

Every request key is claimed before it is sent, so concurrent runs pay once; the build fails
once its claims have gone unrenewed for half the lease, before another run may take them over.
A storage failure raises :class:`~flux_pipeline.store.storage.StorageError` and authentication
and credit errors propagate; what finished before is in the ledger for the next run.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Final

from flux_pipeline.builder.feeding import Feeding
from flux_pipeline.builder.finishing import Finishing
from flux_pipeline.builder.outcomes import Outcome, entry_outcome
from flux_pipeline.builder.planning import PartitionPlan, group_by_key, plan_partition
from flux_pipeline.builder.range_state import RangeState, Tally
from flux_pipeline.builder.reports import BuildProgress, BuildReport, RangeReport
from flux_pipeline.builder.routing import Routing
from flux_pipeline.builder.waiting import Waiting
from flux_pipeline.builder.worker_loop import Emit, run_on_worker_loop
from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.quality.facts import DEFAULT_BLANK_LUMA_STD
from flux_pipeline.segmind import EngineConfig, SegmindEngine
from flux_pipeline.store.account_slot import AccountSlot, holding
from flux_pipeline.store.claims import DEFAULT_LEASE
from flux_pipeline.store.layout import images_dir
from flux_pipeline.store.ledger import Ledger
from flux_pipeline.store.provenance import service_backend
from flux_pipeline.store.storage import ObjectStore

__all__ = [
    "BuildProgress",
    "BuildReport",
    "RangeReport",
    "build_partition",
    "build_partitions",
]

log = logging.getLogger(__name__)

# The tunables: read from here when a build starts and handed to its units.
#: Images being hashed and written at once (bounds the image bytes held in memory).
WRITERS: Final = 4
#: Threads copying reused images into a partition's folder.
COPIERS: Final = 8
#: Seconds before the first look at keys another live run is generating (then doubling).
WAIT_POLL: Final = 1.0
#: Seconds a build's claims stay live without renewal (see :mod:`flux_pipeline.store.claims`).
CLAIM_LEASE = DEFAULT_LEASE


def build_partition(
    requests: Sequence[GenerationRequest],
    *,
    partition: str,
    store: ObjectStore,
    engine_config: EngineConfig,
    progress: Callable[[BuildProgress], None] | None = None,
    progress_interval: float = 5.0,
    backend: str | None = None,
    blank_luma_std: float = DEFAULT_BLANK_LUMA_STD,
) -> BuildReport:
    """Build ``partition`` from ``requests`` (one per prompt, unique ``key``); see the module."""
    run = build_partitions(
        {partition: list(requests)},
        store=store,
        engine_config=engine_config,
        backend=backend,
        progress=progress,
        progress_interval=progress_interval,
        blank_luma_std=blank_luma_std,
    )
    return replace(run.partitions[0], api_requests=run.engine.api_requests, engine=run.engine)


def build_partitions(
    partitions: Mapping[str, Sequence[GenerationRequest]],
    *,
    store: ObjectStore,
    engine_config: EngineConfig,
    progress: Callable[[BuildProgress], None] | None = None,
    progress_interval: float = 5.0,
    on_partition_done: Callable[[BuildReport], None] | None = None,
    backend: str | None = None,
    account: AccountSlot | None = None,
    blank_luma_std: float = DEFAULT_BLANK_LUMA_STD,
) -> RangeReport:
    """Build every partition of ``partitions`` (partition key -> its requests) with one engine.

    ``backend`` names who generates the images (default: the service at the engine's base
    URL; the embedded emulator passes :data:`~flux_pipeline.store.provenance.EMBEDDED_EMULATOR`).
    ``progress`` (every ``progress_interval`` seconds and at the end) and ``on_partition_done``
    (once per partition, right after its lineage file is written) run on the calling thread.
    Bad input (a partition key, duplicate prompt ids) raises ``ValueError`` before any call.
    With ``account``, the build holds one of its slots from before its first request to its end.
    A COMPLETED row is ``blank`` when its ``luma_std`` is below ``blank_luma_std``.
    """
    total = 0
    for partition, requests in partitions.items():
        images_dir(partition)
        try:
            group_by_key(requests)
        except ValueError as exc:
            raise ValueError(f"partition {partition}: {exc}") from None
        total += len(requests)

    def handle(event: object) -> None:
        if isinstance(event, BuildProgress) and progress is not None:
            progress(event)
        elif isinstance(event, BuildReport) and on_partition_done is not None:
            on_partition_done(event)

    backend = backend or service_backend(engine_config.base_url)
    build = _RangeBuild(partitions, total, Ledger(store, backend), engine_config, blank_luma_std)
    interval = progress_interval if progress else None
    # What is alive now (the caller's modules, Dagster's definitions) outlives the build: the
    # cyclic collector need not walk it again at each full pass while images stream through.
    gc.freeze()
    try:
        return run_on_worker_loop(
            lambda emit: holding(account, lambda: build.run(emit, interval)), handle
        )
    finally:
        gc.unfreeze()


class _RangeBuild:
    """One range build: plan -> reuse -> route -> feed -> finish, partition after partition."""

    def __init__(
        self,
        partitions: Mapping[str, Sequence[GenerationRequest]],
        total: int,
        ledger: Ledger,
        config: EngineConfig,
        blank_luma_std: float,
    ) -> None:
        self.partitions = partitions
        self.state = RangeState(
            ledger, config, Tally(total=total), lease=CLAIM_LEASE, blank_luma_std=blank_luma_std
        )
        self.routing = Routing(self.state)

    async def run(self, emit: Emit, progress_interval: float | None) -> RangeReport:
        state = self.state
        store, tasks = state.store, state.tasks
        before = store.requests.snapshot()
        finishing = Finishing(state, emit, copiers=COPIERS)
        ledger, sent = state.ledger, state.sent

        def on_sending(request_key: str, sent_at: datetime) -> None:
            ledger.record_sending(request_key, sent_at, sent[request_key].partition)

        def on_submitted(request_key: str, request_id: str) -> None:
            partition = sent[request_key].partition
            ledger.record_submitted(request_key, request_id, partition=partition)

        async with SegmindEngine(
            state.config, on_submitted=on_submitted, on_sending=on_sending
        ) as engine:
            feeding = Feeding(state, engine, writers=WRITERS)
            waiting = Waiting(state, self.routing, feeding, poll=WAIT_POLL)
            try:
                if progress_interval is not None:
                    tasks.spawn(self._report_every(emit, progress_interval), watch=False)
                tasks.spawn(self._clean_tmp(), watch=False)
                tasks.spawn(state.held.renew_forever())
                tasks.spawn(waiting.watch_forever())
                await self._stream(feeding, finishing)
            finally:
                await tasks.close()
                await state.held.end()
        if progress_interval is not None:
            emit(self._progress())
        after = store.requests.snapshot()
        return RangeReport(
            partitions=tuple(finishing.reports[p] for p in self.partitions),
            engine=engine.stats,
            elapsed_s=time.monotonic() - state.started,
            storage_requests={verb: n - before.get(verb, 0) for verb, n in after.items()},
        )

    async def _stream(self, feeding: Feeding, finishing: Finishing) -> None:
        """Plan, reuse, route, feed and finish each partition in turn; the next one is planned
        while the previous one's requests are still going into the engine."""
        state = self.state
        tasks = state.tasks
        fed: asyncio.Event | None = None
        finished = []
        for partition, requests in self.partitions.items():
            earlier = dict(state.sent)  # what the plan shares, kept even if dropped meanwhile
            plan = await tasks.until(
                asyncio.to_thread(
                    plan_partition, state.ledger, partition, requests, shared=earlier.keys()
                )
            )
            reused = await tasks.until(asyncio.to_thread(self._reuse, plan))
            for key in plan.keys:
                if key.request_key in reused:
                    state.tally.count(len(key.prompts), reused[key.request_key], partition)
            batch = await self.routing.route(plan)
            waits = {
                k.request_key: state.sent.get(k.request_key) or earlier[k.request_key]
                for k in plan.keys
                if k.request_key not in reused
            }
            finished.append(tasks.spawn(finishing.finish(plan, reused, waits)))
            if batch:
                if fed is not None:
                    await tasks.until(fed.wait())
                fed = asyncio.Event()
                tasks.spawn(feeding.run_batch(batch, fed))
        for task in finished:
            await tasks.until(task)

    def _reuse(self, plan: PartitionPlan) -> dict[str, Outcome]:
        """Outcomes of the ``reuse`` and ``failed`` keys; a reused image found only in this
        partition (the one the ledger names is gone) becomes the ledger's copy."""
        store, ledger = self.state.store, self.state.ledger
        found = {}
        for key in plan.keys:
            if key.entry is None or key.action not in ("reuse", "failed"):
                continue
            entry = key.entry
            if key.action == "reuse" and key.source != entry.image_path and entry.lineage:
                moved = replace(entry.lineage, image_uri=store.uri(key.source or ""))
                ledger.record_finished(key.request_key, moved, key.source, entry.generated_for)
            found[key.request_key] = entry_outcome(entry, key.source)
        return found

    async def _clean_tmp(self) -> None:
        """Remove the staging files killed processes left (best effort: errors are logged)."""
        store = self.state.store
        try:
            removed = await asyncio.to_thread(store.clean_tmp)
        except Exception as exc:  # a cleanup never fails a build
            log.warning("could not clean up old staging files under %s (%s)", store, exc)
            return
        if removed:
            log.info("removed %d staging file(s) left by killed processes", removed)

    async def _report_every(self, emit: Emit, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            emit(self._progress())

    def _progress(self) -> BuildProgress:
        elapsed = time.monotonic() - self.state.started
        tally = self.state.tally
        return BuildProgress(
            done=tally.done,
            total=tally.total,
            failed=tally.failed,
            cached=tally.cached,
            rate=tally.generated / elapsed if elapsed > 0 else 0.0,
            elapsed=elapsed,
        )

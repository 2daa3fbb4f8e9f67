"""Build partitions: engine -> object storage -> ledger -> lineage, streaming.

:func:`build_partitions` builds a range of partitions with one :class:`SegmindEngine` (one
pacer, one in-flight window); :func:`build_partition` is its one-partition form. This module
owns that public API and the orchestration of a range (:class:`_RangeBuild`): each partition in
turn is planned (:func:`~flux_pipeline.builder.planning.plan_partition`), its stored outcomes are
reused, its other keys are routed (:mod:`.routing`: claimed, or waited on while another run
holds them, :mod:`.waiting`), fed to the engine (:mod:`.feeding`) and the partition is finished
(:mod:`.finishing`); the units share one :class:`~flux_pipeline.builder.range_state.RangeState`.
The reports are :mod:`.reports`' and the tunables (``WRITERS``, ``COPIERS``, ``WAIT_POLL``,
``CLAIM_LEASE``) are read from here when a build starts.

A partition is planned while the previous one's requests are still being fed to the engine, so
the window stays full across partitions. A partition's rows are held until its last outcome is
known: usually about two partitions' rows, more while partitions with nothing to send wait on
keys another run is generating (a partition that sends requests is planned only once the one
before has all of its requests in the window). Per request key:

1. ``reuse`` / ``failed``: the stored image (copied into this partition's folder when missing)
   or the final FAILED row, no API call;
2. ``attach``: the ledger's request id is polled; ``submit``: a new job;
3. ``shared``: a key an earlier partition of the range attaches or submits is sent once; this
   partition waits for that outcome and copies it.

Each image is stored as it arrives, under the partition the job was sent for (``image_id``
names the backend's image of that request key, see :mod:`flux_pipeline.store.provenance`); no
image bytes are kept. A build uses one backend's ledger: nothing another backend generated is
reused. A partition's lineage file is written atomically, one row per request, as soon as all
its rows are known, then ``on_partition_done(report)`` runs on the calling thread.

Claims (:mod:`flux_pipeline.store.claims`) make every request key submitted once across
concurrent runs. Own claims (:mod:`flux_pipeline.builder.held_claims`) are renewed every quarter
of the lease while their jobs are in flight and released once each outcome is stored (and all of
them when the build ends, however it ends). A key whose claim is found taken over at renewal
(its lease ran out: a stalled process, skewed clocks) and that is not yet handed to the engine
is not sent; it is waited on like any other run's key. (The engine takes one request ahead of a
free window slot, and a job in the window may still wait for the pacer before it submits: those
are not checked again.) A failed renewal or look at other runs' keys is logged and tried again;
the build fails once its claims have gone unrenewed for half the lease (before another run may
take them over), or other runs' keys have gone unread for a whole lease. Once per build,
staging files that killed processes left under ``_tmp/`` are removed (best effort, only those
older than an hour: :meth:`~flux_pipeline.store.storage.ObjectStore.clean_tmp`).

``cached``: the ledger names the partition each generation was made for (the partition whose
build stored it first, see :mod:`flux_pipeline.store.ledger`). A row is ``cached`` exactly when
that partition is another one; rebuilding a partition from its own images reproduces its rows as
generated (request id, timings, timestamps, ``cached`` false), so its metrics do not change.

A storage failure raises :class:`~flux_pipeline.store.storage.StorageError`, and authentication
and credit errors propagate as the engine raised them; the partitions not finished by then get
no lineage. What finished before is in the ledger, so the next run picks it up.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
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
) -> BuildReport:
    """Build ``partition`` from ``requests`` (one per prompt, unique ``key``); see the module."""
    run = build_partitions(
        {partition: list(requests)},
        store=store,
        engine_config=engine_config,
        backend=backend,
        progress=progress,
        progress_interval=progress_interval,
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
) -> RangeReport:
    """Build every partition of ``partitions`` (partition key -> its requests) with one engine.

    ``backend`` names who generates the images (default: the service at the engine's base
    URL; the embedded emulator passes :data:`~flux_pipeline.store.provenance.EMBEDDED_EMULATOR`).
    ``progress`` (every ``progress_interval`` seconds and at the end) and ``on_partition_done``
    (once per partition, right after its lineage file is written) run on the calling thread.
    Bad input (a partition key, duplicate prompt ids) raises ``ValueError`` before any call.
    With ``account``, the build holds one of its slots from before its first request to its end.
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
    build = _RangeBuild(partitions, total, Ledger(store, backend), engine_config)
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
    ) -> None:
        self.partitions = partitions
        self.state = RangeState(ledger, config, Tally(total=total), lease=CLAIM_LEASE)
        self.routing = Routing(self.state)

    async def run(self, emit: Emit, progress_interval: float | None) -> RangeReport:
        state = self.state
        store, tasks = state.store, state.tasks
        before = store.requests.snapshot()
        finishing = Finishing(state, emit, copiers=COPIERS)
        on_submitted = state.ledger.record_submitted
        async with SegmindEngine(state.config, on_submitted=on_submitted) as engine:
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

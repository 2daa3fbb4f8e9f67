"""Build partitions: engine -> object storage -> ledger -> lineage, streaming.

:func:`build_partitions` builds a range of partitions with one :class:`SegmindEngine` (one
pacer, one in-flight window); :func:`build_partition` is its one-partition form. Partitions are
taken in order, each planned by :func:`.planning.plan_partition` while the previous
one's requests are still being fed to the engine, so the window stays full across partitions.
A partition's rows are held until its last outcome is known: usually about two partitions'
rows, more while partitions with nothing to send wait on keys another run is generating (a
partition that sends requests is planned only once the one before has all of its requests in
the window). Per request key:

1. ``reuse`` / ``failed``: the stored image (copied into this partition's folder when missing)
   or the final FAILED row, no API call;
2. ``attach``: the ledger's request id is polled; ``submit``: a new job;
3. ``shared``: a key an earlier partition of the range attaches or submits is sent once; this
   partition waits for that outcome and copies it.

Each image is written atomically to ``images/partition=KEY/{prompt_id}-{image_id}.{ext}`` (of
the partition the job was sent for; ``image_id`` names the backend's image of that request key,
see :mod:`flux_pipeline.store.provenance`) as it arrives, then the ledger records it; no image bytes
are kept. A build uses one backend's ledger: nothing another backend generated is reused. A
partition's lineage file is written atomically, one row per request, as soon as all its rows
are known, then ``on_partition_done(report)`` runs on the calling thread.

Claims (:mod:`flux_pipeline.store.claims`) make every request key submitted once across concurrent
runs: before a key is attached or submitted the build claims it, then reads the ledger again
(another run may have finished it in between: reused). A key whose claim another live run holds
is not sent: one background task reads the ledger for those keys (every ``WAIT_POLL`` seconds,
doubling up to a quarter of the lease while nothing changes), reuses what the other run
finished without paying, and only for the keys still unfinished reads their claims: a claim
whose holder died (or that was released with no final outcome, e.g. a retryable failure) is
taken over and sent in a new pass of the same engine. Own claims
(:mod:`flux_pipeline.build.held_claims`) are renewed every quarter of the lease while their jobs are
in flight and released once each outcome is stored (and all of them when the build ends, however
it ends). A key whose claim is found taken over at renewal
(its lease ran out: a stalled process, skewed clocks) and that is not yet handed to the engine
is not sent; it is waited on like any other run's key. (The engine takes one request ahead of a
free window slot, and a job in the window may still wait for the pacer before it submits: those
are not checked again.) A failed renewal or look at other runs' keys is logged and
tried again; the build fails once its claims have gone unrenewed for half the lease (before
another run may take them over), or other runs' keys have gone unread for a whole lease.
Once per build, staging files that killed processes left under ``_tmp/`` are removed (best
effort, only those older than an hour: :meth:`~flux_pipeline.store.storage.ObjectStore.clean_tmp`).

``cached``: the ledger names the partition each generation was made for (the partition whose
build stored it first, see :mod:`flux_pipeline.store.ledger`). A row is ``cached`` exactly when that
partition is another one; rebuilding a partition from its own images reproduces its rows as
generated (request id, timings, timestamps, ``cached`` false), so its metrics do not change.

A storage failure raises :class:`~flux_pipeline.store.storage.StorageError`, and authentication and
credit errors propagate as the engine raised them; the partitions not finished by then get no
lineage. What finished before is in the ledger, so the next run picks it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from flux_pipeline.build.held_claims import HeldClaims
from flux_pipeline.build.outcomes import Outcome, entry_outcome, prompt_rows, store_result
from flux_pipeline.build.planning import KeyPlan, PartitionPlan, group_by_key, plan_partition
from flux_pipeline.build.task_groups import BoundedTasks, WatchedTasks
from flux_pipeline.build.worker_loop import Emit, run_on_worker_loop
from flux_pipeline.protocol import COMPLETED, FAILED, GenerationRequest
from flux_pipeline.segmind import EngineConfig, EngineStats, GenerationResult, SegmindEngine
from flux_pipeline.store.account_slot import AccountSlot, holding
from flux_pipeline.store.claims import DEFAULT_LEASE
from flux_pipeline.store.imagefolder import write_imagefolder_metadata
from flux_pipeline.store.layout import images_dir
from flux_pipeline.store.ledger import SUBMITTED, Ledger, LedgerEntry
from flux_pipeline.store.lineage import LineageRow, write_partition_lineage
from flux_pipeline.store.provenance import service_backend
from flux_pipeline.store.storage import ObjectStore, StorageError

__all__ = [
    "BuildProgress",
    "BuildReport",
    "RangeReport",
    "build_partition",
    "build_partitions",
]

log = logging.getLogger(__name__)

#: Images being hashed and written at once (bounds the image bytes held in memory).
WRITERS: Final = 4
#: Threads copying reused images into a partition's folder.
COPIERS: Final = 8
#: Seconds before the first look at keys another live run is generating (then doubling).
WAIT_POLL: Final = 1.0
#: Seconds a build's claims stay live without renewal (see :mod:`flux_pipeline.store.claims`).
CLAIM_LEASE = DEFAULT_LEASE


@dataclass(frozen=True)
class BuildProgress:
    """Where a build stands over all its partitions; ``rate`` is images generated (not reused)
    per second."""

    done: int
    total: int
    failed: int
    cached: int
    rate: float
    elapsed: float


@dataclass(frozen=True)
class BuildReport:
    """The outcome of one partition. ``completed``, ``failed`` and ``cached`` count its lineage
    rows; ``reused`` counts rows the plan found stored (no API call in this build);
    ``from_other_runs`` counts request keys sent for this partition whose outcome another run
    produced while this build ran (it held their claim, or finished them since the plan): taken
    from the ledger, not paid.

    In :func:`build_partition`, ``api_requests`` and ``engine`` are the engine's exact counts.
    In a range, ``api_requests`` sums the ``attempts`` of the results made for this partition
    (every HTTP request spent on each image: submit, polls, result, media download, retries),
    and ``engine`` is None: the shared engine's counters are :attr:`RangeReport.engine`.
    """

    partition: str
    total: int
    completed: int
    failed: int
    cached: int
    api_requests: int
    elapsed_s: float
    images_prefix_uri: str
    lineage_uri: str
    engine: EngineStats | None = None
    reused: int = 0
    from_other_runs: int = 0


@dataclass(frozen=True)
class RangeReport:
    """A range build: one report per partition (in the order given), the engine's counters
    over the whole range, its wall time, and the object-store requests it made, by verb."""

    partitions: tuple[BuildReport, ...]
    engine: EngineStats
    elapsed_s: float
    storage_requests: Mapping[str, int]

    @property
    def storage_requests_per_image(self) -> float | None:
        """Object-store requests per image this build generated (None: it generated none)."""
        made = self.engine.completed
        return sum(self.storage_requests.values()) / made if made else None


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
    return run_on_worker_loop(
        lambda emit: holding(account, lambda: build.run(emit, interval)), handle
    )


@dataclass
class _Tally:
    """Rows known so far, over the whole range (for progress)."""

    total: int
    done: int = 0
    failed: int = 0
    cached: int = 0
    generated: int = 0

    def count(self, rows: int, outcome: Outcome, partition: str) -> None:
        self.done += rows
        self.failed += rows if outcome.row.status == FAILED else 0
        self.cached += rows if outcome.partition != partition else 0


@dataclass
class _Sent:
    """A request key this run attaches or submits: for which partition, and its outcome."""

    partition: str
    outcome: asyncio.Future[Outcome]
    #: The ledger entry the plan saw (a finished one that differs was written since).
    seen: LedgerEntry | None = None
    #: ``attach``: the request id to poll and when an earlier run submitted it.
    attach_id: str | None = None
    submitted_at: datetime | None = None
    #: HTTP requests the engine spent on the key's result (0: no result from this engine).
    attempts: int = 0
    #: The outcome came from another run's ledger entry.
    from_other_run: bool = False


class _RangeBuild:
    def __init__(
        self,
        partitions: Mapping[str, Sequence[GenerationRequest]],
        total: int,
        ledger: Ledger,
        config: EngineConfig,
    ) -> None:
        self.partitions = partitions
        self.store = store = ledger.store
        self.config = config
        self.ledger = ledger
        self.tally = _Tally(total=total)
        #: Keys attached or submitted by this run, by request key, until their partition is
        #: done (then only those with no final outcome stay, for later partitions to share).
        self.sent: dict[str, _Sent] = {}
        self.reports: dict[str, BuildReport] = {}
        self.started = time.monotonic()
        self.tasks = WatchedTasks()
        #: Requests of the batches being fed, not yet handed to the engine, in order.
        self.queues: list[deque[GenerationRequest]] = []
        #: Keys whose claim this run holds and has not let go.
        self.held = HeldClaims(store, lease=CLAIM_LEASE, upcoming=self._upcoming)
        #: Keys another live run holds, waited on by :meth:`_watch_others`.
        self.waiting: dict[str, GenerationRequest] = {}
        #: Set when keys join ``waiting`` (their first look comes ``WAIT_POLL`` s later).
        self.joined = asyncio.Event()
        self._engine: SegmindEngine | None = None

    @property
    def engine(self) -> SegmindEngine:
        if self._engine is None:
            raise RuntimeError("the engine is not open")
        return self._engine

    async def run(self, emit: Emit, progress_interval: float | None) -> RangeReport:
        self.emit = emit
        before = self.store.requests.snapshot()
        async with SegmindEngine(self.config, on_submitted=self.ledger.record_submitted) as engine:
            self._engine = engine
            try:
                if progress_interval is not None:
                    self.tasks.spawn(self._report_every(progress_interval), watch=False)
                self.tasks.spawn(self._clean_tmp(), watch=False)
                self.tasks.spawn(self.held.renew_forever())
                self.tasks.spawn(self._watch_others())
                await self._stream()
            finally:
                await self.tasks.close()
                await self.held.end()
        if progress_interval is not None:
            self._progress()
        after = self.store.requests.snapshot()
        return RangeReport(
            partitions=tuple(self.reports[p] for p in self.partitions),
            engine=engine.stats,
            elapsed_s=time.monotonic() - self.started,
            storage_requests={verb: n - before.get(verb, 0) for verb, n in after.items()},
        )

    async def _stream(self) -> None:
        """Plan, reuse and feed each partition in turn; the next one is planned while the
        previous one's requests are still going into the engine."""
        fed: asyncio.Event | None = None
        finishing = []
        for partition, requests in self.partitions.items():
            earlier = dict(self.sent)  # what the plan shares, kept even if dropped meanwhile
            plan = await self.tasks.until(
                asyncio.to_thread(
                    plan_partition, self.ledger, partition, requests, shared=earlier.keys()
                )
            )
            reused = await self.tasks.until(asyncio.to_thread(self._reuse, plan))
            for key in plan.keys:
                if key.request_key in reused:
                    self.tally.count(len(key.prompts), reused[key.request_key], partition)
            batch = await self._route(plan)
            waits = {
                k.request_key: self.sent.get(k.request_key) or earlier[k.request_key]
                for k in plan.keys
                if k.request_key not in reused
            }
            finishing.append(self.tasks.spawn(self._finish_partition(plan, reused, waits)))
            if batch:
                if fed is not None:
                    await self.tasks.until(fed.wait())
                fed = asyncio.Event()
                self.tasks.spawn(self._run_batch(batch, fed))
        for task in finishing:
            await self.tasks.until(task)

    def _reuse(self, plan: PartitionPlan) -> dict[str, Outcome]:
        """Outcomes of the ``reuse`` and ``failed`` keys; a reused image found only in this
        partition (the one the ledger names is gone) becomes the ledger's copy."""
        found = {}
        for key in plan.keys:
            if key.entry is None or key.action not in ("reuse", "failed"):
                continue
            entry = key.entry
            if key.action == "reuse" and key.source != entry.image_path and entry.lineage:
                moved = replace(entry.lineage, image_uri=self.store.uri(key.source or ""))
                self.ledger.record_finished(key.request_key, moved, key.source, entry.generated_for)
            found[key.request_key] = entry_outcome(entry, key.source)
        return found

    async def _route(self, plan: PartitionPlan) -> list[GenerationRequest]:
        """Register the keys this partition attaches or submits and claim them; return those
        to send now (the others are waited on, or were finished by another run meanwhile)."""
        wanted = {k.request_key: k for k in plan.keys if k.action in ("attach", "submit")}
        if not wanted:
            return []
        loop = asyncio.get_running_loop()
        for key in wanted.values():
            self.sent[key.request_key] = _Sent(plan.partition, loop.create_future(), key.entry)
        created: set[str] = set()
        mine, others = await self.tasks.until(self.held.claim(wanted, created))
        if others:
            log.info(
                "partition %s: %d request key(s) are claimed by another live run: waiting for "
                "its results",
                plan.partition,
                len(others),
            )
        for request_key in others:
            self._wait_on(wanted[request_key].leader)
        return await self._confirm([wanted[k].leader for k in wanted if k in mine], created)

    def _wait_on(self, request: GenerationRequest) -> None:
        self.waiting[request.request_key] = request
        self.joined.set()

    async def _confirm(
        self, claimed: list[GenerationRequest], created: set[str] | frozenset[str] = frozenset()
    ) -> list[GenerationRequest]:
        """Read the ledger again for freshly claimed keys: reuse what another run finished
        since the plan, attach to a recorded id, and return what is left to send. A key in
        ``created`` (its first claim ever: no run has sent it) keeps the entry the plan read."""
        again = [r.request_key for r in claimed if r.request_key not in created]
        entries = await self.tasks.until(asyncio.to_thread(self.ledger.get_many, again))
        batch, finished = [], []
        for request in claimed:
            sent = self.sent[request.request_key]
            entry = (
                sent.seen if request.request_key in created else entries.get(request.request_key)
            )
            outcome = self._finished_since(sent, entry)
            if outcome is not None:
                sent.from_other_run = True
                sent.outcome.set_result(outcome)
                finished.append(request.request_key)
                continue
            if entry is not None and entry.state == SUBMITTED and entry.request_id:
                sent.attach_id, sent.submitted_at = entry.request_id, entry.submitted_at
            batch.append(request)
        self.held.forget(finished)  # final in the ledger: their claims block nobody
        return batch

    @staticmethod
    def _finished_since(sent: _Sent, entry: LedgerEntry | None) -> Outcome | None:
        """The outcome of a finished entry written since the plan read ``sent.seen``."""
        if entry is None or entry.lineage is None or entry == sent.seen:
            return None
        if entry.state == COMPLETED and entry.image_path:
            return entry_outcome(entry, entry.image_path)
        return entry_outcome(entry, None) if entry.state == FAILED else None

    async def _watch_others(self) -> None:
        """Look at the keys other live runs hold ``WAIT_POLL`` s after they join, then at
        intervals doubling up to a quarter of the lease while nothing changes. A failed look is
        logged and tried again; none succeeding for a whole lease fails the build."""
        loop = asyncio.get_running_loop()
        delay, looked = WAIT_POLL, loop.time()
        due = looked + delay
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.joined.wait(), max(0.0, due - loop.time()))
            if self.joined.is_set():
                self.joined.clear()
                delay, due = WAIT_POLL, min(due, loop.time() + WAIT_POLL)
                continue
            try:
                changed = await self._look_at_others() if self.waiting else False
            except Exception as exc:  # s3fs/botocore raise more than OSError
                if loop.time() - looked > self.held.lease:
                    raise StorageError(
                        f"could not read the claims or ledger entries of {len(self.waiting)} "
                        f"request key(s) other runs hold for {self.held.lease:g} s: {exc}"
                    ) from exc
                log.warning("could not look at keys other runs hold (%s); trying again", exc)
                due = loop.time() + delay
                continue
            looked = loop.time()
            delay = delay if changed else min(2 * delay, self.held.renew_every)
            due = looked + delay

    async def _look_at_others(self) -> bool:
        """Reuse what other runs finished; read the claims of the keys still unfinished and
        take over (claim and send) those no live run holds. True if any key was resolved."""
        keys = list(self.waiting)
        entries = await asyncio.to_thread(self.ledger.get_many, keys)
        reused = 0
        for key in keys:
            outcome = self._finished_since(self.sent[key], entries.get(key))
            if outcome is not None and key in self.waiting:
                del self.waiting[key]
                self.sent[key].from_other_run = True
                self.sent[key].outcome.set_result(outcome)
                reused += 1
        if reused:
            log.info("reused the outcome of %d request key(s) another run finished", reused)
        # A holder that finishes between the two reads looks free: the claim is then taken and
        # _confirm reads the ledger again, so its outcome is still reused, not paid again.
        left = [k for k in keys if k in self.waiting]
        free = await asyncio.to_thread(self.held.not_held_live, left) if left else []
        taken = [k for k in free if k in self.waiting]
        if not taken:
            return reused > 0
        mine, _ = await self.held.claim(taken)
        if not mine:  # another run took them over first: keep waiting
            return reused > 0
        requests = [self.waiting.pop(k) for k in taken if k in mine]
        log.info("taking over %d request key(s) whose claim holder is gone", len(requests))
        try:
            batch = await self._confirm(requests)
        except BaseException:  # nothing was resolved: look at them again next time
            self.waiting.update((r.request_key, r) for r in requests)
            raise
        if batch:
            self.tasks.spawn(self._run_batch(batch, asyncio.Event()))
        return True

    async def _clean_tmp(self) -> None:
        """Remove the staging files killed processes left (best effort: errors are logged)."""
        try:
            removed = await asyncio.to_thread(self.store.clean_tmp)
        except Exception as exc:  # a cleanup never fails a build
            log.warning("could not clean up old staging files under %s (%s)", self.store, exc)
            return
        if removed:
            log.info("removed %d staging file(s) left by killed processes", removed)

    async def _run_batch(self, batch: list[GenerationRequest], fed: asyncio.Event) -> None:
        """Send ``batch`` through the shared engine; ``fed`` is set once every request of it
        is in the engine's window (or the batch ended)."""
        attach = {
            r.request_key: sent.attach_id
            for r in batch
            if (sent := self.sent[r.request_key]).attach_id
        }

        lost: set[str] = set()
        queue = deque(batch)

        def feed() -> Iterator[GenerationRequest]:
            """The batch, lazily: a key whose claim was taken over meanwhile is waited on."""
            self.queues.append(queue)
            try:
                while queue:
                    request = queue.popleft()
                    if request.request_key in self.held:
                        yield request
                    else:
                        lost.add(request.request_key)
                        self._wait_on(request)
            finally:
                self.queues.remove(queue)
            fed.set()

        writers = BoundedTasks(WRITERS)
        try:
            # Close the stream here so its jobs are cancelled before the client closes.
            async with aclosing(self.engine.generate(feed(), attach=attach)) as results:
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
            if r.request_key not in lost and not self.sent[r.request_key].outcome.done()
        ]
        if missing:
            raise RuntimeError(f"the engine returned no result for {missing}")

    def _upcoming(self) -> list[str]:
        """The held keys next in line in each batch being fed: one window's worth of each."""
        return [
            request.request_key
            for queue in self.queues
            for request in itertools.islice(queue, self.config.max_concurrency)
            if request.request_key in self.held
        ]

    async def _keep(self, result: GenerationResult) -> None:
        key = result.request.request_key
        sent = self.sent[key]
        outcome = await asyncio.to_thread(
            store_result, self.store, self.ledger, result, sent.partition, sent.submitted_at
        )
        if outcome.final:  # in the ledger: its claim blocks nobody
            self.held.forget([key])
        else:  # another run may try it at once
            await self.held.release([key])
        self.tally.generated += 1
        sent.attempts = result.attempts
        sent.outcome.set_result(outcome)

    async def _finish_partition(
        self, plan: PartitionPlan, reused: dict[str, Outcome], waits: dict[str, _Sent]
    ) -> None:
        """Wait for every key of the partition (``waits``: those not reused), copy its images,
        write its lineage, report; then forget the keys it sent whose outcome is final (later
        partitions find them in the ledger)."""
        outcomes = dict(reused)
        for key in plan.keys:
            if key.request_key not in outcomes:
                outcome = await waits[key.request_key].outcome
                self.tally.count(len(key.prompts), outcome, plan.partition)
                outcomes[key.request_key] = outcome
        rows = await asyncio.to_thread(self._rows, plan, outcomes)
        await asyncio.to_thread(write_imagefolder_metadata, self.store, plan.partition, rows)
        lineage_uri = await asyncio.to_thread(
            write_partition_lineage, self.store, plan.partition, rows
        )
        own = [sent for sent in waits.values() if sent.partition == plan.partition]
        report = self._report(plan, rows, lineage_uri, own)
        self.reports[plan.partition] = report
        for request_key, sent in waits.items():
            if sent.partition == plan.partition and outcomes[request_key].final:
                del self.sent[request_key]
        self.emit(report)

    def _rows(self, plan: PartitionPlan, outcomes: dict[str, Outcome]) -> list[LineageRow]:
        """One row per request of the partition, in the order given."""
        stored = dict(plan.stored)

        def rows_of(key: KeyPlan) -> list[LineageRow]:
            outcome = outcomes[key.request_key]
            return prompt_rows(self.store, outcome, key.prompts, plan.partition, stored)

        with ThreadPoolExecutor(COPIERS) as pool:
            by_prompt = {
                row.prompt_id: row for rows in pool.map(rows_of, plan.keys) for row in rows
            }
        return [by_prompt[prompt_id] for prompt_id in plan.order]

    def _report(
        self, plan: PartitionPlan, rows: list[LineageRow], lineage_uri: str, own: list[_Sent]
    ) -> BuildReport:
        """The partition's report; ``own``: the keys this run sent for it."""
        return BuildReport(
            partition=plan.partition,
            total=len(rows),
            completed=sum(r.status == COMPLETED for r in rows),
            failed=sum(r.status == FAILED for r in rows),
            cached=sum(r.cached for r in rows),
            api_requests=sum(sent.attempts for sent in own),
            elapsed_s=time.monotonic() - self.started,
            images_prefix_uri=self.store.uri(images_dir(plan.partition)),
            lineage_uri=lineage_uri,
            reused=plan.prompts("reuse") + plan.prompts("failed"),
            from_other_runs=sum(sent.from_other_run for sent in own),
        )

    async def _report_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self._progress()

    def _progress(self) -> None:
        elapsed = time.monotonic() - self.started
        tally = self.tally
        self.emit(
            BuildProgress(
                done=tally.done,
                total=tally.total,
                failed=tally.failed,
                cached=tally.cached,
                rate=tally.generated / elapsed if elapsed > 0 else 0.0,
                elapsed=elapsed,
            )
        )

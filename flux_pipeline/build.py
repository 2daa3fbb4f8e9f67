"""Build one partition: engine -> object storage -> ledger -> lineage, streaming.

For each request, in this order of preference:

1. the ledger says COMPLETED and the image object is there (same size as recorded): reuse it
   without an API call, copying it into this partition's folder if it lives elsewhere; the row
   says ``cached=True`` and keeps the original request id, timings and timestamps;
2. the ledger holds a final (non-retryable) FAILED: reuse that row, no call;
3. the ledger holds a SUBMITTED request id: re-attach to it;
4. otherwise submit it. Requests of the partition that share a request key are sent once and
   the others get a copy of the image.

Each image is written atomically to ``images/partition=KEY/{prompt_id}-{seed}.{ext}`` as it
arrives, then the ledger records it, then its lineage row is kept (no image bytes are kept).
The partition's lineage file is written last, atomically, one row per request. A storage
failure raises :class:`~flux_pipeline.storage.StorageError` and writes no lineage;
authentication and credit errors propagate as the engine raised them. What finished before
either is in the ledger, so the next run picks it up.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from PIL import Image

from flux_pipeline.ledger import Ledger, LedgerEntry
from flux_pipeline.lineage import LineageRow, partition_dir, write_partition_lineage
from flux_pipeline.protocol import COMPLETED, FAILED, GenerationRequest
from flux_pipeline.segmind import EngineConfig, EngineStats, GenerationResult, SegmindEngine
from flux_pipeline.storage import ObjectStore

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Images being hashed and written at once (bounds the image bytes held in memory).
WRITERS: Final = 4
#: Threads copying reused images between partitions.
COPIERS: Final = 8
_EXTENSIONS: Final = {
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
}
_PIL_TYPES: Final = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


@dataclass(frozen=True)
class BuildProgress:
    """Where a build stands; ``rate`` is images generated (not reused) per second."""

    done: int
    total: int
    failed: int
    cached: int
    rate: float
    elapsed: float


@dataclass(frozen=True)
class BuildReport:
    """The outcome of one partition build. ``completed`` and ``failed`` count rows, cached
    ones included; ``cached`` counts rows that needed no API call."""

    partition: str
    total: int
    completed: int
    failed: int
    cached: int
    api_requests: int
    retries: int
    elapsed_s: float
    images_prefix_uri: str
    lineage_uri: str
    engine: EngineStats


def images_dir(partition: str) -> str:
    """``images/partition=KEY`` (the key checked as in :func:`lineage.partition_dir`)."""
    partition_dir(partition)
    return f"images/partition={partition}"


def build_partition(
    requests: Iterable[GenerationRequest],
    *,
    partition: str,
    store: ObjectStore,
    engine_config: EngineConfig,
    progress: Callable[[BuildProgress], None] | None = None,
    progress_interval: float = 5.0,
) -> BuildReport:
    """Build ``partition`` from ``requests`` (one per prompt, unique ``key``); see the module."""
    build = _PartitionBuild(list(requests), partition, store, progress)
    return asyncio.run(build.run(engine_config, progress_interval))


class _PartitionBuild:
    def __init__(
        self,
        requests: list[GenerationRequest],
        partition: str,
        store: ObjectStore,
        progress: Callable[[BuildProgress], None] | None,
    ) -> None:
        duplicates = sorted(k for k, n in Counter(r.key for r in requests).items() if n > 1)
        if duplicates:
            raise ValueError(f"request keys (prompt ids) must be unique: {duplicates}")
        self.requests = requests
        self.partition = partition
        self.store = store
        self.ledger = Ledger(store)
        self.images_dir = images_dir(partition)
        self.progress = progress
        self.rows: dict[str, LineageRow] = {}
        #: Requests waiting for another request of this partition with the same request key.
        self.followers: dict[str, list[GenerationRequest]] = {}
        #: When the jobs re-attached from the ledger were submitted (by an earlier run).
        self.resumed_submitted_at: dict[str, datetime | None] = {}
        self.generated = 0
        self.started = time.monotonic()

    async def run(self, config: EngineConfig, progress_interval: float) -> BuildReport:
        reporter = asyncio.create_task(self._report_every(progress_interval))
        try:
            pending, attach, reused = await asyncio.to_thread(self._plan)
            self.rows.update(reused)
            stats = await self._generate(config, pending, attach) if pending else EngineStats()
            missing = [r.key for r in self.requests if r.key not in self.rows]
            if missing:
                raise RuntimeError(f"the engine returned no result for {missing}")
            rows = [self.rows[r.key] for r in self.requests]
            lineage_uri = await asyncio.to_thread(
                write_partition_lineage, self.store, self.partition, rows
            )
        finally:
            reporter.cancel()
        self._report()
        return BuildReport(
            partition=self.partition,
            total=len(rows),
            completed=sum(r.status == COMPLETED for r in rows),
            failed=sum(r.status == FAILED for r in rows),
            cached=sum(r.cached for r in rows),
            api_requests=stats.api_requests,
            retries=stats.retries,
            elapsed_s=time.monotonic() - self.started,
            images_prefix_uri=self.store.uri(self.images_dir),
            lineage_uri=lineage_uri,
            engine=stats,
        )

    def _plan(self) -> tuple[list[GenerationRequest], dict[str, str], dict[str, LineageRow]]:
        """Reuse what the ledger and storage hold: what is left to generate, the request ids to
        attach to, and the rows reused (by prompt id)."""
        leaders: dict[str, GenerationRequest] = {}
        for request in self.requests:
            if request.request_key in leaders:
                self.followers.setdefault(request.request_key, []).append(request)
            else:
                leaders[request.request_key] = request
        self.store.clean_tmp()
        entries = self.ledger.get_many(leaders)
        stored = self.store.sizes(self.images_dir)
        with ThreadPoolExecutor(COPIERS) as pool:
            reused = list(
                pool.map(
                    lambda r: self._reuse(r, entries.get(r.request_key), stored), leaders.values()
                )
            )
        left, rows = [], {}
        for request, group_rows in zip(leaders.values(), reused, strict=True):
            rows.update(group_rows)
            if not group_rows:
                left.append(request)
        resumed = [
            entry
            for r in left
            if (entry := entries.get(r.request_key)) is not None
            and entry.state == "SUBMITTED"
            and entry.request_id
        ]
        self.resumed_submitted_at = {e.request_key: e.submitted_at for e in resumed}
        attach = {e.request_key: e.request_id or "" for e in resumed}
        return left, attach, rows

    def _reuse(
        self, request: GenerationRequest, entry: LedgerEntry | None, stored: dict[str, int]
    ) -> dict[str, LineageRow]:
        """Cached rows of ``request`` and its followers by prompt id; empty: generate it.

        A stored image is trusted when its size matches the ledger (the image-integrity asset
        check compares sha256). This partition's own copies are looked at first, then the one
        the ledger names; when only ours is left (the original partition was deleted), the
        ledger is pointed at it so later partitions keep reusing it. No copy left: generate.
        """
        group = (request, *self.followers.get(request.request_key, ()))
        if entry is None or entry.lineage is None:
            return {}
        if entry.state == FAILED:
            return {r.key: replace(entry.lineage, prompt_id=r.key, cached=True) for r in group}
        source, size = entry.image_path, entry.lineage.image_bytes
        if source is None:
            return {}
        targets = {r.key: self._image_path(r, source.rsplit(".", 1)[-1]) for r in group}
        origin = self._stored_copy([*targets.values(), source], size, stored)
        if origin is None:
            log.warning("no stored copy of %s's image is left; generating it again", request.key)
            return {}
        if origin != source:
            moved = replace(entry.lineage, image_uri=self.store.uri(origin))
            self.ledger.record_finished(request.request_key, moved, origin)
        rows = {}
        for key, path in targets.items():
            if stored.get(path) != size:
                self.store.copy(origin, path)
            rows[key] = replace(
                entry.lineage, prompt_id=key, image_uri=self.store.uri(path), cached=True
            )
        return rows

    def _stored_copy(
        self, paths: list[str], size: int | None, stored: dict[str, int]
    ) -> str | None:
        """The first of ``paths`` that holds an object of ``size`` bytes.

        ``stored`` lists this partition's images; paths elsewhere are asked for one by one.
        """
        for path in paths:
            if path.startswith(f"{self.images_dir}/"):
                found = stored.get(path)
            else:
                try:
                    found = self.store.size(path)
                except FileNotFoundError:
                    found = None
            if found is not None and found == size:
                return path
        return None

    async def _generate(
        self, config: EngineConfig, pending: list[GenerationRequest], attach: dict[str, str]
    ) -> EngineStats:
        writers = _BoundedTasks(WRITERS)
        async with SegmindEngine(config, on_submitted=self.ledger.record_submitted) as engine:
            try:
                # Close the stream here so its jobs are cancelled before the client closes.
                async with aclosing(engine.generate(pending, attach=attach)) as results:
                    async for result in results:
                        await writers.start(self._keep, result)
            except BaseException:
                await writers.wait()
                raise
            await writers.wait()
            writers.raise_failure()
            return engine.stats

    async def _keep(self, result: GenerationResult) -> None:
        self.rows.update(await asyncio.to_thread(self._finish, result))
        self.generated += 1

    def _finish(self, result: GenerationResult) -> dict[str, LineageRow]:
        """Store one result durably (image, then ledger); its rows and its followers' rows.

        A FAILED result that a later run cannot fix (400, 422, content that is not an image) is
        recorded in the ledger as final; a retryable one (deadline, ambiguous submit) is not.
        """
        request = result.request
        if result.status == COMPLETED and result.content is not None:
            row, path = self._store_image(result, result.content)
        else:
            row, path = self._failed_row(result, result.error or "no image in the result"), None
        if path is not None or not result.retryable:
            self.ledger.record_finished(request.request_key, row, path)
        rows = {request.key: row}
        for follower in self.followers.get(request.request_key, ()):
            rows[follower.key] = self._follower_row(row, follower, path)
        return rows

    def _store_image(
        self, result: GenerationResult, content: bytes
    ) -> tuple[LineageRow, str | None]:
        try:
            with Image.open(io.BytesIO(content)) as image:
                width, height = image.size
                content_type = _PIL_TYPES.get(str(image.format)) or _media_type(result)
        except Exception as exc:  # Pillow raises several types for content that is not an image
            message = f"the service returned content that is not a readable image ({exc})"
            return self._failed_row(result, message), None
        ext = _EXTENSIONS.get(content_type)
        if ext is None:
            return self._failed_row(result, f"unsupported image type {content_type!r}"), None
        path = self._image_path(result.request, ext)
        uri = self.store.write_atomic(path, content)
        row = self._row(
            result,
            status=COMPLETED,
            error=None,
            completed_at=datetime.now(UTC),
            image_uri=uri,
            image_sha256=hashlib.sha256(content).hexdigest(),
            image_bytes=len(content),
            content_type=content_type,
            width=width,
            height=height,
        )
        return row, path

    def _failed_row(self, result: GenerationResult, error: str) -> LineageRow:
        return self._row(
            result,
            status=FAILED,
            error=error,
            completed_at=result.completed_at or datetime.now(UTC),
            image_uri=None,
            image_sha256=None,
            image_bytes=None,
            content_type=None,
            width=None,
            height=None,
        )

    def _row(self, result: GenerationResult, **outcome: Any) -> LineageRow:
        request = result.request
        return LineageRow(
            prompt_id=request.key,
            prompt=request.prompt,
            seed=request.seed,
            steps=request.steps,
            aspect_ratio=request.aspect_ratio,
            model=request.model,
            request_id=result.request_id,
            inference_time=result.inference_time,
            queue_time=result.queue_time,
            cost=result.cost,
            attempts=result.attempts,
            submitted_at=result.submitted_at or self.resumed_submitted_at.get(request.request_key),
            request_key=request.request_key,
            cached=False,
            **outcome,
        )

    def _follower_row(
        self, row: LineageRow, follower: GenerationRequest, leader_path: str | None
    ) -> LineageRow:
        if leader_path is None:
            return replace(row, prompt_id=follower.key, cached=True)
        path = self._image_path(follower, leader_path.rsplit(".", 1)[-1])
        uri = self.store.copy(leader_path, path)
        return replace(row, prompt_id=follower.key, image_uri=uri, cached=True)

    def _image_path(self, request: GenerationRequest, ext: str) -> str:
        return f"{self.images_dir}/{request.key}-{request.seed}.{ext}"

    async def _report_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        elapsed = time.monotonic() - self.started
        rows = list(self.rows.values())
        self.progress(
            BuildProgress(
                done=len(rows),
                total=len(self.requests),
                failed=sum(r.status == FAILED for r in rows),
                cached=sum(r.cached for r in rows),
                rate=self.generated / elapsed if elapsed > 0 else 0.0,
                elapsed=elapsed,
            )
        )


class _BoundedTasks:
    """At most ``limit`` tasks at once; the first failure is kept and stops new starts."""

    def __init__(self, limit: int) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    async def start(self, work: Callable[[T], Awaitable[None]], arg: T) -> None:
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
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure


def _media_type(result: GenerationResult) -> str:
    return (result.content_type or "").split(";")[0].strip().lower()

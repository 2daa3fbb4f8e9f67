"""Jobs, their retention-bound store, and the FIFO pool of inference slots."""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from flux_pipeline import protocol
from flux_pipeline.emulator.params import Params
from flux_pipeline.emulator.pictures import Pictures
from flux_pipeline.emulator.settings import EmulatorSettings

NSFW = re.compile(r"\bnsfw\b", re.IGNORECASE)
CONTENT_POLICY_ERROR = (
    "Content policy violation: the safety filter flagged this request as NSFW; no image was"
    " produced"
)
#: Inference time varies by up to this fraction either way, seeded per request.
JITTER = 0.05


@dataclass(eq=False)
class Job:
    """One accepted generation request; ``account`` is a digest of the key, never the key."""

    params: Params
    account: str
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = protocol.QUEUED
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    output: bytes | None = field(default=None, repr=False)
    error: str | None = None
    remaining_credits: float | None = None
    #: Submitted through v1 (its credits are given back when it fails).
    sync: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def inference_time(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return round(self.finished - self.started, 3)

    @property
    def queue_time(self) -> float | None:
        return None if self.started is None else round(self.started - self.submitted, 3)

    @property
    def total_time(self) -> float | None:
        return None if self.finished is None else round(self.finished - self.submitted, 3)


class JobStore:
    """Jobs by request id, forgotten ``retention`` seconds after submission; job counters."""

    def __init__(self, retention: float) -> None:
        self.retention = retention
        self._jobs: dict[str, Job] = {}
        self.by_request_key: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    def add(self, job: Job) -> None:
        self._jobs[job.request_id] = job
        self.by_request_key[job.params.request_key] += 1

    def get(self, request_id: str) -> Job | None:
        """The job, or None when unknown or expired."""
        job = self._jobs.get(request_id)
        if job is not None and self._expired(job, time.monotonic()):
            self._forget(job)
            return None
        return job

    def sweep(self) -> None:
        """Forget every expired job (frees their images)."""
        now = time.monotonic()
        for job in [job for job in self._jobs.values() if self._expired(job, now)]:
            self._forget(job)

    def _expired(self, job: Job, now: float) -> bool:
        return now - job.submitted > self.retention

    def _forget(self, job: Job) -> None:
        del self._jobs[job.request_id]
        self.counts["expired"] += 1


class InferencePool:
    """``workers`` slots serving queued jobs first in, first out.

    A job holds its slot for ``steps x step_time`` seconds (seeded jitter) or as long as
    rendering takes, whichever is longer; rendering runs in threads, off the event loop.
    """

    def __init__(
        self,
        settings: EmulatorSettings,
        store: JobStore,
        on_finished: Callable[[Job], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.on_finished = on_finished
        self.pictures = Pictures(settings)
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=min(self.settings.workers, 2), thread_name_prefix="emulator-render"
        )
        self._tasks = [
            asyncio.create_task(self._serve(), name=f"emulator-slot-{index}")
            for index in range(self.settings.workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def submit(self, job: Job) -> None:
        self.store.counts["queued"] += 1
        self._queue.put_nowait(job)

    async def render(self, params: Params) -> bytes:
        """The request's image as the pictures knobs choose it (blank, duplicate), rendered in
        the pool's threads: a job's output, and again for a recorded request whose result has
        expired."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self.pictures.render, params
        )

    def planned_time(self, params: Params) -> float:
        """Seconds the job holds its slot: ``steps x step_time`` with seeded jitter."""
        jitter = random.Random(f"{self.settings.seed}\x00jitter\x00{params.request_key}")
        return params.steps * self.settings.step_time * jitter.uniform(1 - JITTER, 1 + JITTER)

    async def _serve(self) -> None:
        while True:
            job = await self._queue.get()
            counts = self.store.counts
            counts["queued"] -= 1
            counts["processing"] += 1
            job.status, job.started = protocol.PROCESSING, time.monotonic()
            try:
                await self._infer(job)
            finally:
                counts["processing"] -= 1
                counts["completed" if job.status == protocol.COMPLETED else "failed"] += 1
                job.finished = time.monotonic()
                self.on_finished(job)
                job.done.set()

    async def _infer(self, job: Job) -> None:
        params = job.params
        holding = asyncio.sleep(self.planned_time(params))
        if NSFW.search(params.prompt):
            await holding
            job.status, job.error = protocol.FAILED, CONTENT_POLICY_ERROR
            return
        try:
            job.output, _ = await asyncio.gather(self.render(params), holding)
        except Exception as exc:
            job.status, job.error = protocol.FAILED, f"Inference failed: {exc}"
        else:
            job.status = protocol.COMPLETED

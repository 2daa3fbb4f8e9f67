"""The asyncio engine: generation requests in, results out as they complete.

It keeps the window of jobs in flight, feeds requests into it and sends each job through v2
(``v2.py``: submit, follow, result) or v1 (``v1.py``: one POST), as ``modes.py`` picks; both
turn outputs into checked images through ``output.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.segmind import v1, v2
from flux_pipeline.segmind.config import EngineConfig
from flux_pipeline.segmind.estimator import CompletionEstimator, SubmitOrder
from flux_pipeline.segmind.http.client import HttpClient
from flux_pipeline.segmind.http.exceptions import StepFailed
from flux_pipeline.segmind.http.timeouts import Attempts
from flux_pipeline.segmind.modes import ModeChooser
from flux_pipeline.segmind.output import DECODERS
from flux_pipeline.segmind.pacing import AdaptiveWindow, RequestPacer
from flux_pipeline.segmind.results import GenerationResult
from flux_pipeline.segmind.session import BudgetSpent, Job, Run, Session, SubmittedHook
from flux_pipeline.segmind.spending import SpendingGuard
from flux_pipeline.segmind.stats import EngineStats

log = logging.getLogger("flux_pipeline.segmind")

__all__ = ["SegmindEngine", "SubmittedHook"]

_FED = object()  # the feeder has handed out every request


class SegmindEngine:
    """Turns many :class:`GenerationRequest` into :class:`GenerationResult`, concurrently.

    Use as ``async with SegmindEngine(config, on_submitted=hook) as engine``; see
    :meth:`generate`. ``stats`` accumulates over the engine's lifetime.
    """

    def __init__(self, config: EngineConfig, *, on_submitted: SubmittedHook | None = None) -> None:
        self.config = config
        self.stats = EngineStats(mode=config.mode)
        self._on_submitted = on_submitted
        self._estimator = CompletionEstimator(config.prior_step_time)
        self._order = SubmitOrder()
        self._pacer = RequestPacer(config.requests_per_minute, self.stats)
        self._modes = ModeChooser(config.mode, self._pacer, self.stats)
        self._guard = SpendingGuard(
            config.max_new_images, config.max_cost, config.price_per_image, self.stats
        )
        self._warned: set[str] = set()
        self._session: Session | None = None

    def __repr__(self) -> str:
        return f"SegmindEngine({self.config!r})"

    async def __aenter__(self) -> SegmindEngine:
        window = AdaptiveWindow(self.config.max_concurrency)
        self._session = Session(
            config=self.config,
            stats=self.stats,
            http=HttpClient(self.config, self.stats, window, self._pacer),
            window=window,
            estimator=self._estimator,
            order=self._order,
            modes=self._modes,
            guard=self._guard,
            # The on_submitted hook gets threads of its own: behind image writes and other
            # work in the default executor, a recorded id would wait, and a process killed
            # meanwhile would lose a paid job's id (the one window in which a job is paid twice).
            hooks=ThreadPoolExecutor(self.config.max_concurrency, "segmind-on-submitted"),
            on_submitted=self._on_submitted,
            warned=self._warned,
            decoders=asyncio.Semaphore(DECODERS),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.http.aclose()
            session.hooks.shutdown(wait=True)

    def _open(self) -> Session:
        if self._session is None:
            raise RuntimeError("use the engine inside 'async with SegmindEngine(...)'")
        return self._session

    async def generate(
        self,
        requests: Iterable[GenerationRequest],
        attach: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[GenerationResult, None]:
        """Yield one result per request as each completes, ``max_concurrency`` at a time.

        ``requests`` is consumed lazily. ``attach`` maps request keys to request ids of an
        earlier run: those are polled instead of submitted (expired ones are submitted once).
        Raises :class:`AuthenticationError` at once; :class:`InsufficientCredits`, or the
        error of an ``on_submitted`` hook, once the jobs already in flight have been yielded.
        """
        window = self._open().window
        run = Run()
        outbox: asyncio.Queue[object] = asyncio.Queue()
        feeder = asyncio.create_task(self._feed(requests, dict(attach or {}), outbox, run))
        fed, taken = False, 0
        try:
            while not (fed and taken == run.spawned):
                item = await outbox.get()
                if item is _FED:
                    fed = True
                    continue
                if isinstance(item, BaseException):
                    raise item
                taken += 1
                await window.release()
                if isinstance(item, GenerationResult):
                    yield item
            if run.deferred_error is not None:
                raise run.deferred_error
        finally:
            for task in (feeder, *run.tasks):
                task.cancel()
            await asyncio.gather(feeder, *run.tasks, return_exceptions=True)

    async def _feed(
        self,
        requests: Iterable[GenerationRequest],
        attach: dict[str, str],
        outbox: asyncio.Queue[object],
        run: Run,
    ) -> None:
        window = self._open().window
        try:
            for request in requests:
                await window.acquire()
                if run.stop_submitting:
                    await window.release()
                    break
                run.spawned += 1
                task = asyncio.create_task(
                    self._job(request, attach.get(request.request_key), outbox, run)
                )
                run.tasks.add(task)
                task.add_done_callback(run.tasks.discard)
        except Exception as exc:  # a bad request iterable ends the run with its own error
            await outbox.put(exc)
        await outbox.put(_FED)

    async def _job(
        self,
        request: GenerationRequest,
        attach_id: str | None,
        outbox: asyncio.Queue[object],
        run: Run,
    ) -> None:
        item: object
        try:
            item = await self._run_job(request, attach_id, run)
        except Exception as exc:  # auth errors end the whole run at once
            item = exc
        await outbox.put(item)

    async def _run_job(
        self, request: GenerationRequest, attach_id: str | None, run: Run
    ) -> GenerationResult | None:
        session = self._open()
        job = Job(request, Attempts(time.monotonic() + self.config.deadline))
        try:
            if attach_id:
                self.stats.attached += 1
                v2.attach(session, job, attach_id)
                outcome = await v2.follow(session, job, first_delay=0.0, optimistic=False)
                if isinstance(outcome, GenerationResult):
                    return outcome
                self.stats.expired += 1
                log.info("request %s of %s expired; submitting it again", attach_id, request.key)
            if run.stop_submitting:
                return None
            # The budget first: a request it refuses takes no place from the pacer.
            await session.reserve(job)
            if self._modes.auto:
                await self._pacer.wait()  # pick when the first request may go out
                job.attempts.paced = True
            job.mode = self._modes.pick()
            if job.mode == "sync":
                outcome = await v1.run_sync(session, job, run)
                if outcome is not v1.NO_SYNC_HERE:
                    return outcome if isinstance(outcome, GenerationResult) else None
                job.mode = "async"
                await session.reserve(job)
            if not await v2.submit(session, job, run):
                return None
            first = self._estimator.first_poll(request.steps, job.ahead or 0)
            outcome = await v2.follow(session, job, first_delay=first, optimistic=True)
            if isinstance(outcome, GenerationResult):
                return outcome
            raise StepFailed(
                f"request {job.request_id} was gone (HTTP 404) before its result was fetched",
                retryable=True,
            )
        except BudgetSpent as exc:
            self.stats.budget_refused += 1
            return session.failed(job, exc.error, retryable=True)
        except StepFailed as exc:
            return session.failed(job, exc.error, retryable=exc.retryable, timed_out=exc.timed_out)
        finally:
            if job.reserved:  # never POSTed (stopped, cancelled while paced): give it back
                job.reserved = False
                await asyncio.shield(self._guard.settle(billed=False))
            if job.order is not None:
                self._order.remove(job.order)

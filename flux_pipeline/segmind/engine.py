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
from datetime import UTC, datetime
from types import TracebackType

from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.segmind import ambiguous, v1, v2
from flux_pipeline.segmind.config import EngineConfig
from flux_pipeline.segmind.estimator import CompletionEstimator, SubmitOrder
from flux_pipeline.segmind.history import AccountRecord, Adopted, RecordedRequest
from flux_pipeline.segmind.http.client import HttpClient
from flux_pipeline.segmind.http.exceptions import StepFailed
from flux_pipeline.segmind.http.timeouts import Attempts
from flux_pipeline.segmind.modes import ModeChooser
from flux_pipeline.segmind.output import DECODERS
from flux_pipeline.segmind.pacing import AdaptiveWindow, RequestPacer
from flux_pipeline.segmind.recovery import from_record
from flux_pipeline.segmind.results import GenerationResult
from flux_pipeline.segmind.session import (
    BudgetSpent,
    Job,
    Run,
    SendingHook,
    Session,
    SubmittedHook,
)
from flux_pipeline.segmind.spending import SpendingGuard
from flux_pipeline.segmind.stats import EngineStats

log = logging.getLogger("flux_pipeline.segmind")

__all__ = ["SegmindEngine", "SendingHook", "SubmittedHook"]

_FED = object()  # the feeder has handed out every request


class SegmindEngine:
    """Turns many :class:`GenerationRequest` into :class:`GenerationResult`, concurrently.

    Use as ``async with SegmindEngine(config, on_submitted=hook) as engine``; see
    :meth:`generate`. ``stats`` accumulates over the engine's lifetime. ``on_sending`` is run
    before each submit's POST goes out (the ledger keeps the send time, so a run that dies
    before the answer is resolved from the account's record on restart).
    """

    def __init__(
        self,
        config: EngineConfig,
        *,
        on_submitted: SubmittedHook | None = None,
        on_sending: SendingHook | None = None,
    ) -> None:
        self.config = config
        self.stats = EngineStats(mode=config.mode)
        self._on_submitted = on_submitted
        self._on_sending = on_sending
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
        http = HttpClient(self.config, self.stats, window, self._pacer)
        self._session = Session(
            config=self.config,
            stats=self.stats,
            http=http,
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
            on_sending=self._on_sending,
            record=AccountRecord(http, self.config),
            history_grace=self.config.history_grace,
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
        unanswered: Mapping[str, datetime] | None = None,
    ) -> AsyncGenerator[GenerationResult, None]:
        """Yield one result per request as each completes, ``max_concurrency`` at a time.

        ``requests`` is consumed lazily. ``attach`` maps request keys to request ids of an
        earlier run: those are polled instead of submitted (expired ones are read from the
        account's record, and submitted once when it has none). ``unanswered`` maps request
        keys to the UTC time an earlier run sent their submit without seeing its answer: those
        are resolved from the record before anything is sent.
        Raises :class:`AuthenticationError` at once; :class:`InsufficientCredits`, or the
        error of an ``on_submitted`` hook, once the jobs already in flight have been yielded.
        """
        window = self._open().window
        run = Run()
        outbox: asyncio.Queue[object] = asyncio.Queue()
        feeder = asyncio.create_task(
            self._feed(requests, dict(attach or {}), dict(unanswered or {}), outbox, run)
        )
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
        unanswered: dict[str, datetime],
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
                key = request.request_key
                task = asyncio.create_task(
                    self._job(request, attach.get(key), unanswered.get(key), outbox, run)
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
        unanswered_at: datetime | None,
        outbox: asyncio.Queue[object],
        run: Run,
    ) -> None:
        item: object
        try:
            item = await self._run_job(request, attach_id, unanswered_at, run)
        except Exception as exc:  # auth errors end the whole run at once
            item = exc
        await outbox.put(item)

    async def _run_job(
        self,
        request: GenerationRequest,
        attach_id: str | None,
        unanswered_at: datetime | None,
        run: Run,
    ) -> GenerationResult | None:
        session = self._open()
        job = Job(request, Attempts(time.monotonic() + self.config.deadline))
        try:
            if attach_id:
                self.stats.attached += 1
                outcome = await self._follow(session, job, attach_id)
                if outcome is not None:
                    return outcome
                self.stats.expired += 1
                log.info(
                    "request %s of %s expired and the account's record has none; "
                    "submitting it again",
                    attach_id,
                    request.key,
                )
            elif unanswered_at is not None:
                self.stats.ambiguous_submits += 1
                found = await ambiguous.resolve(session, job, unanswered_at)
                if found is not None:
                    return await self._adopted(session, job, found)
                self.stats.resubmitted += 1
            while True:
                if run.stop_submitting:
                    return None
                try:
                    return await self._submit(session, job, run)
                except Adopted as adopted:
                    found = adopted.row
                except StepFailed as exc:
                    if not exc.maybe_billed or job.request_id is not None:
                        raise
                    sent_at = job.attempts.sent_at or datetime.now(UTC)
                    found = await ambiguous.resolve(session, job, sent_at)
                    if found is None:  # never made: send it again
                        self.stats.resubmitted += 1
                        continue
                return await self._adopted(session, job, found)
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

    async def _submit(self, session: Session, job: Job, run: Run) -> GenerationResult | None:
        """One new job for ``job``'s request (v1 or v2), followed to its result; None once
        submitting has stopped. Raises :class:`Adopted` when a faulted submit's job was found in
        the record, :class:`StepFailed` (``maybe_billed``) when a submit's answer was lost."""
        # The budget first: a request it refuses takes no place from the pacer.
        await session.reserve(job)
        if self._modes.auto:
            await self._pacer.wait()  # pick when the first request may go out
            job.attempts.paced = True
        ambiguous.look_on_fault(session, job)
        job.mode = self._modes.pick()
        if job.mode == "sync":
            outcome = await v1.run_sync(session, job, run)
            if outcome is not v1.NO_SYNC_HERE:
                return outcome if isinstance(outcome, GenerationResult) else None
            job.mode = "async"
            await session.reserve(job)
        if not await v2.submit(session, job, run):
            return None
        first = self._estimator.first_poll(job.request.steps, job.ahead or 0)
        outcome = await v2.follow(session, job, first_delay=first, optimistic=True)
        if isinstance(outcome, GenerationResult):
            return outcome
        recovered = await from_record(session, job, job.request_id or "")
        if recovered is not None:
            return recovered
        raise StepFailed(
            f"request {job.request_id} was gone (HTTP 404) before its result was fetched, and "
            "the account's record has none",
            retryable=True,
        )

    async def _follow(
        self, session: Session, job: Job, request_id: str, known: RecordedRequest | None = None
    ) -> GenerationResult | None:
        """Follow ``request_id`` to its result; once the service no longer keeps it (404), the
        account's record tells it instead. None when neither knows the request."""
        v2.attach(session, job, request_id)
        outcome = await v2.follow(session, job, first_delay=0.0, optimistic=False)
        if isinstance(outcome, GenerationResult):
            return outcome
        return await from_record(session, job, request_id, known)

    async def _adopted(
        self, session: Session, job: Job, found: RecordedRequest
    ) -> GenerationResult:
        """The result of the job an ambiguous submit made, found in the record: its id is
        recorded first, then it is followed."""
        log.info(
            "%s: the account's record has request %s; adopted", job.request.key, found.request_id
        )
        await ambiguous.adopt(session, job, found)
        outcome = await self._follow(session, job, found.request_id, found)
        if outcome is None:
            raise StepFailed(
                f"request {found.request_id}, found in the account's record, is gone from it",
                retryable=True,
            )
        return outcome

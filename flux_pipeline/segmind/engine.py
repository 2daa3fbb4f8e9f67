"""The asyncio engine: generation requests in, results out as they complete."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any

import httpx

from flux_pipeline.protocol import COMPLETED, FAILED, PROCESSING, QUEUED, GenerationRequest
from flux_pipeline.segmind.config import EngineConfig
from flux_pipeline.segmind.errors import InsufficientCredits, ModelNotFound
from flux_pipeline.segmind.estimator import CompletionEstimator, SubmitOrder
from flux_pipeline.segmind.media import CheckedImage, NotAnImage, check_image, far_from_requested
from flux_pipeline.segmind.modes import ModeChooser
from flux_pipeline.segmind.pacing import AdaptiveWindow, RequestPacer
from flux_pipeline.segmind.results import GenerationResult
from flux_pipeline.segmind.spending import SpendingGuard
from flux_pipeline.segmind.stats import EngineStats, Protocol, RequestKind
from flux_pipeline.segmind.transport import (
    AnswerTooLarge,
    Budget,
    MediaAnswer,
    StepFailed,
    Transport,
)

log = logging.getLogger("flux_pipeline.segmind")

SubmittedHook = Callable[[str, str], None]

_EXPIRED = object()  # the service no longer knows the request id (404)
_NO_SYNC_HERE = object()  # the v1 endpoint does not exist: go through v2
_FED = object()  # the feeder has handed out every request

#: Answers to a submit that end only that image: bad parameters (400), a FAILED job (422).
_FINAL_REFUSALS = frozenset({400, 422})
#: Times a result is asked again after its output was refused with a 4xx (an expired signed
#: URL) or was not a whole image (truncated, undecodable, over ``max_image_bytes``).
_MAX_REFETCHES = 3
#: Answers of a v1 POST that mean "no sync endpoint here": v2 for the rest of the run.
_NO_SYNC = frozenset({404, 405})
#: Images decoded at once (each takes up to ``media.MAX_PIXELS`` x 4 bytes while it is).
_DECODERS = 2
#: Times a result that says COMPLETED without an ``output`` is asked again before giving up.
_MAX_EMPTY_RESULTS = 3


class _Refetch(StepFailed):
    """The output could not be taken (a media host's 4xx, a body that is not a whole image):
    ask the result URL again, for a fresh URL or a good copy."""


class _BudgetSpent(StepFailed):
    """The budget refused this request: nothing was sent, a later run may submit it."""


@dataclass
class _Job:
    request: GenerationRequest
    budget: Budget
    request_id: str | None = None
    status_url: str = ""
    response_url: str = ""
    submitted_at: datetime | None = None
    #: Place in the submit order of our unfinished v2 jobs, and how many were ahead of it
    #: when it was accepted (None for a job attached from an earlier run).
    order: int | None = None
    ahead: int | None = None
    protocol: Protocol = "async"
    #: The job holds a place of the budget that no POST has taken over yet.
    reserved: bool = False


@dataclass
class _Run:
    """State shared by the jobs of one ``generate`` call."""

    spawned: int = 0
    stop_submitting: bool = False
    #: Raised once the jobs in flight are done: out of credits, or a submitted hook failed.
    deferred_error: Exception | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def stop(self, error: Exception) -> None:
        """Submit nothing more; let the jobs in flight finish, then raise ``error``."""
        self.stop_submitting = True
        self.deferred_error = self.deferred_error or error


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
        self._transport: Transport | None = None
        self._hooks: ThreadPoolExecutor | None = None
        self._window: AdaptiveWindow | None = None
        self._decoders = asyncio.Semaphore(_DECODERS)
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"SegmindEngine({self.config!r})"

    async def __aenter__(self) -> SegmindEngine:
        self._window = AdaptiveWindow(self.config.max_concurrency)
        self._transport = Transport(self.config, self.stats, self._window, self._pacer)
        # The on_submitted hook gets threads of its own: behind image writes and other work in
        # the default executor, a recorded id would wait, and a process killed meanwhile would
        # lose a paid job's id (the one window in which a job is paid twice).
        self._hooks = ThreadPoolExecutor(self.config.max_concurrency, "segmind-on-submitted")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._transport is not None:
            await self._transport.aclose()
        self._transport = None
        if self._hooks is not None:
            self._hooks.shutdown(wait=True)
        self._hooks = None

    @property
    def _http(self) -> Transport:
        if self._transport is None:
            raise RuntimeError("use the engine inside 'async with SegmindEngine(...)'")
        return self._transport

    def _open_window(self) -> AdaptiveWindow:
        if self._window is None or self._transport is None:
            raise RuntimeError("use the engine inside 'async with SegmindEngine(...)'")
        return self._window

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
        window = self._open_window()
        run = _Run()
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
        run: _Run,
    ) -> None:
        window = self._open_window()
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
        run: _Run,
    ) -> None:
        item: object
        try:
            item = await self._run_job(request, attach_id, run)
        except Exception as exc:  # auth errors end the whole run at once
            item = exc
        await outbox.put(item)

    async def _run_job(
        self, request: GenerationRequest, attach_id: str | None, run: _Run
    ) -> GenerationResult | None:
        job = _Job(request, Budget(time.monotonic() + self.config.deadline))
        try:
            if attach_id:
                self.stats.attached += 1
                job.request_id = attach_id
                job.status_url = f"{self._http.base}/v2/requests/{attach_id}/status"
                job.response_url = f"{self._http.base}/v2/requests/{attach_id}"
                outcome = await self._follow(job, first_delay=0.0, optimistic=False)
                if isinstance(outcome, GenerationResult):
                    return outcome
                self.stats.expired += 1
                log.info("request %s of %s expired; submitting it again", attach_id, request.key)
            if run.stop_submitting:
                return None
            # The budget first: a request it refuses takes no place from the pacer.
            await self._reserve(job)
            if self._modes.auto:
                await self._pacer.wait()  # pick when the first request may go out
                job.budget.paced = True
            job.protocol = self._modes.pick()
            if job.protocol == "sync":
                outcome = await self._run_sync(job, run)
                if outcome is not _NO_SYNC_HERE:
                    return outcome if isinstance(outcome, GenerationResult) else None
                job.protocol = "async"
                await self._reserve(job)
            if not await self._submit(job, run):
                return None
            first = self._estimator.first_poll(request.steps, job.ahead or 0)
            outcome = await self._follow(job, first_delay=first, optimistic=True)
            if isinstance(outcome, GenerationResult):
                return outcome
            raise StepFailed(
                f"request {job.request_id} was gone (HTTP 404) before its result was fetched",
                retryable=True,
            )
        except _BudgetSpent as exc:
            self.stats.budget_refused += 1
            return self._failed(job, exc.error, retryable=True)
        except StepFailed as exc:
            return self._failed(job, exc.error, retryable=exc.retryable, timed_out=exc.timed_out)
        finally:
            if job.reserved:  # never POSTed (stopped, cancelled while paced): give it back
                job.reserved = False
                await asyncio.shield(self._guard.settle(billed=False))
            if job.order is not None:
                self._order.remove(job.order)

    async def _reserve(self, job: _Job) -> None:
        """Reserve the job's place in the budget; raises :class:`_BudgetSpent` when none is left."""
        refusal = await self._guard.reserve()
        if refusal is not None:
            raise _BudgetSpent(f"{refusal}: not submitted", retryable=True)
        job.reserved = True

    async def _post(
        self, job: _Job, run: _Run, kind: RequestKind, version: str
    ) -> MediaAnswer | None:
        """POST the job to ``/{version}/{model}``; None once submitting has stopped.

        The POST takes over the job's reservation in the budget (see :meth:`_reserve`): an
        answer other than 200 gives it back, as does an error before sending.
        """
        job.reserved = False
        if run.stop_submitting:
            await asyncio.shield(self._guard.settle(billed=False))
            return None
        http = self._http
        billed, answer = False, None
        try:
            answer = await http.send_media(
                kind,
                "POST",
                f"{http.base}/{version}/{self.config.model}",
                job.budget,
                json=job.request.payload(base64=self.config.base64),
                media=kind == "sync",
            )
            billed = answer.response.status_code == 200
        except InsufficientCredits as exc:
            run.stop(exc)
            return None
        except StepFailed as exc:
            billed = exc.maybe_billed
            raise
        except asyncio.CancelledError:
            billed = job.budget.unrecorded_submit  # sent, fate unknown: count it
            raise
        finally:
            headers = answer.response.headers if answer is not None and kind == "sync" else {}
            cost = _number(headers.get("x-cost")) if billed else None
            await asyncio.shield(self._guard.settle(billed=billed, cost=cost))
        return answer

    async def _submit(self, job: _Job, run: _Run) -> bool:
        """POST the job and record its id; False when submitting has stopped.

        A submit already sent when the run is cancelled (another job's auth error, a failed
        write, a cancelled Dagster run) is seen through, for up to ``request_timeout``, so
        that its id reaches the ``on_submitted`` hook rather than being lost with a paid job.
        """
        attempt = asyncio.ensure_future(self._submit_and_record(job, run))
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            if job.budget.unrecorded_submit:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(attempt, self.config.request_timeout)
            else:
                attempt.cancel()
            raise

    async def _submit_and_record(self, job: _Job, run: _Run) -> bool:
        answer = await self._post(job, run, "submit", "v2")
        if answer is None:
            return False
        response, http = answer.response, self._http
        if response.status_code != 200:
            self._refuse_model(response)
            raise StepFailed(
                f"submit: HTTP {response.status_code}: {http.error_text(response)}",
                retryable=response.status_code not in _FINAL_REFUSALS,
            )
        body = _json(response)
        request_id = str(body.get("request_id") or "")
        if not request_id:
            raise StepFailed("submit: answer without request_id", retryable=True)
        job.request_id = request_id
        job.submitted_at = job.budget.sent_at
        requests_url = f"{http.base}/v2/requests/{request_id}"
        job.status_url = self._own_url(str(body.get("status_url") or ""), f"{requests_url}/status")
        job.response_url = self._own_url(str(body.get("response_url") or ""), requests_url)
        self.stats.submitted += 1
        job.order = self._order.add()
        job.ahead = self._order.ahead(job.order)
        try:
            if self._on_submitted is not None:
                hook = functools.partial(self._on_submitted, job.request.request_key, request_id)
                await asyncio.get_running_loop().run_in_executor(self._hooks, hook)
        except Exception as exc:
            # The job exists and is billed: follow it to its result rather than drop its
            # id, and submit nothing more while the caller cannot keep ids.
            run.stop(exc)
            log.warning(
                "could not record request id %s of %s (%s); following it to its result "
                "and submitting nothing more",
                request_id,
                job.request.key,
                exc,
            )
        finally:
            job.budget.unrecorded_submit = False
        return True

    def _own_url(self, named: str, documented: str) -> str:
        """``named`` (a status or result URL the API handed out) when the key may go there,
        else the ``documented`` one under the API root (the key never goes to other hosts)."""
        if not named or self._http.trust(named):
            return named or documented
        self._warn_once(
            "foreign-url",
            "the API named a status/result URL on an origin outside its own domain (or over "
            "http); the key is not sent there, polling the documented URLs under %s instead",
            self._http.base,
        )
        return documented

    def _warn_once(self, topic: str, message: str, *args: object) -> None:
        """Log ``message`` at WARNING the first time ``topic`` comes up, at DEBUG after."""
        level = logging.DEBUG if topic in self._warned else logging.WARNING
        self._warned.add(topic)
        log.log(level, message, *args)

    def _refuse_model(self, response: httpx.Response) -> None:
        """Raise :class:`ModelNotFound` for a 404 to a POST: the URL is wrong for every image."""
        if response.status_code == 404:
            raise ModelNotFound(
                f"Segmind answered HTTP 404 ({self._http.error_text(response)}) to a request for "
                f"model {self.config.model!r} at {self._http.base}: check that SEGMIND_BASE_URL "
                "is the API root (e.g. https://api.segmind.com, a trailing /v1 is fine) and the "
                "model slug is right (unset SEGMIND_API_KEY and SEGMIND_BASE_URL to use the "
                "local emulator)."
            )

    async def _follow(self, job: _Job, *, first_delay: float, optimistic: bool) -> object:
        """Poll until the job ends: a result, or ``_EXPIRED`` for an unknown request id.

        While the job is believed done (``optimistic``), the result URL is asked directly,
        saving the status round trip, and asked again while it answers 200 with a running
        status; any other answer there without ``output`` sends us to the documented status URL.
        Only a FAILED status in the body is final there; the status URL's 422 is final too.
        """
        http = self._http
        delay, use_result, confirmed, misses = first_delay, optimistic, False, 0
        first = optimistic  # the poll the estimator planned: was the job done by then?
        refetches = empty_results = 0
        while True:
            if delay > 0:
                if delay >= job.budget.remaining():
                    raise StepFailed(
                        f"deadline of {self.config.deadline:g} s reached while request "
                        f"{job.request_id} was still running (attach to it to collect it)",
                        retryable=True,
                        timed_out=True,
                    )
                await asyncio.sleep(delay)
            kind: RequestKind = "result" if use_result else "status"
            url = job.response_url if use_result else job.status_url
            try:
                response = await http.send(kind, "GET", url, job.budget)
                body = _json(response)
                state = body.get("status")
                if first:
                    first = False
                    self._estimator.first_poll_seen(done=state not in (QUEUED, PROCESSING))
                if state == FAILED or (response.status_code == 422 and not use_result):
                    return self._failed(job, _error(http, response, body), retryable=False)
                if use_result and response.status_code == 200 and body.get("output"):
                    return await self._completed(job, body)
            except (_Refetch, AnswerTooLarge) as failure:
                exc = failure
                if isinstance(failure, AnswerTooLarge):
                    if not use_result:  # a status answer: not about the image
                        raise
                    exc = self._bad_media(job, failure.error)  # a base64 output too large
                refetches += 1
                if refetches > _MAX_REFETCHES:
                    raise StepFailed(
                        f"{exc.error} (the result was asked again {_MAX_REFETCHES} times)",
                        retryable=True,
                    ) from None
                log.info("%s: %s; asking for the result again", job.request.key, exc.error)
                delay = self._next_poll(job, refetches, queued=False)
                continue
            if use_result and response.status_code == 200 and state == COMPLETED:
                empty_results += 1
                if empty_results >= _MAX_EMPTY_RESULTS:
                    raise StepFailed(
                        f"result: request {job.request_id} says COMPLETED but its result "
                        f"carried no output ({empty_results} times)",
                        retryable=True,
                    )
            if response.status_code == 404 and (confirmed or not use_result):
                return _EXPIRED
            if not use_result and response.status_code == 200 and state == COMPLETED:
                delay, use_result, confirmed = 0.0, True, True
                continue
            if response.status_code == 200 and state in (QUEUED, PROCESSING):
                # still running; a result URL that answers progress is polled again directly
                misses += 1
                delay = self._next_poll(job, misses, queued=state == QUEUED)
            elif use_result:  # an answer we cannot read as progress: ask /status instead
                misses += 1
                not_found = response.status_code == 404
                delay = 0.0 if not_found else self._next_poll(job, misses, queued=False)
                use_result = False
            else:  # the job was accepted (and paid): a later run may still collect it
                raise StepFailed(
                    f"status: HTTP {response.status_code}: {_error(http, response, body)}",
                    retryable=True,
                )

    def _next_poll(self, job: _Job, misses: int, *, queued: bool) -> float:
        ahead = None if job.order is None else self._order.ahead(job.order)
        return self._estimator.next_poll(job.request.steps, misses, queued=queued, ahead=ahead)

    async def _completed(self, job: _Job, body: dict[str, Any]) -> GenerationResult:
        output = body["output"]
        if isinstance(output, list):
            output = output[0]
        if isinstance(output, str) and output.startswith(("http://", "https://")):
            download = self._http.send_media("download", "GET", output, job.budget)
            try:
                with await download as answer:
                    response = answer.response
                    if 400 <= response.status_code < 500:
                        raise _Refetch(
                            f"download: HTTP {response.status_code}: "
                            f"{self._http.error_text(response)}",
                            retryable=True,
                        )
                    if response.status_code != 200:
                        raise StepFailed(
                            f"download: HTTP {response.status_code}: "
                            f"{self._http.error_text(response)}",
                            retryable=True,
                        )
                    image = await self._check(job, "download", answer.body or response.content)
            except AnswerTooLarge as exc:
                raise self._bad_media(job, exc.error) from None
        else:
            image = await self._check(job, "result", self._inline_image(job, str(output)))
        self._estimator.completed()
        metrics = body.get("metrics") or {}
        if metrics.get("remaining_credits") is not None:
            self.stats.remaining_credits = _number(metrics["remaining_credits"])
        if job.request_id is not None and job.submitted_at is not None:
            await self._guard.report(_number(metrics.get("cost")))  # a job this engine paid
        return await self._success(
            job,
            image,
            inference_time=_number(metrics.get("inference_time")),
            queue_time=_number(metrics.get("queue_time")),
            cost=_number(metrics.get("cost")),
        )

    async def _run_sync(self, job: _Job, run: _Run) -> object:
        """v1: one POST answers the image itself (bytes, or JSON base64).

        Returns the result, None once submitting has stopped, or ``_NO_SYNC_HERE`` when the
        service has no v1 endpoint (404/405): then v2 serves every later image of the run.
        """
        answer = await self._post(job, run, "sync", "v1")
        if answer is None:
            return None
        with answer:
            response = answer.response
            if response.status_code in _NO_SYNC:
                self._no_sync(response)
                return _NO_SYNC_HERE
            http = self._http
            job.request_id = response.headers.get("x-request-id")
            job.submitted_at = job.budget.sent_at
            if response.status_code != 200:
                retryable = response.status_code not in _FINAL_REFUSALS
                body = _json(response)
                return self._failed(job, _error(http, response, body), retryable=retryable)
            self.stats.submitted += 1
            headers = response.headers
            if headers.get("x-remaining-credits") is not None:
                self.stats.remaining_credits = _number(headers["x-remaining-credits"])
            if answer.body is None:
                body = _json(response)
                inline = self._inline_image(job, str(body.get("image") or body.get("output")))
                image = await self._check(job, "sync", inline)
            else:
                image = await self._check(job, "sync", answer.body)
        return await self._success(
            job,
            image,
            inference_time=_number(headers.get("x-generation-time")),
            queue_time=None,
            cost=_number(headers.get("x-cost")),
        )

    def _no_sync(self, response: httpx.Response) -> None:
        """The v1 endpoint is missing: v2 for the rest of the run, said once."""
        self.stats.sync_unavailable = True
        self._modes.sync_unavailable()
        self._warn_once(
            "no-sync",
            "the sync endpoint (v1) of model %r answered HTTP %d at %s: this service has none; "
            "every image of this run goes through v2",
            self.config.model,
            response.status_code,
            self._http.base,
        )

    def _inline_image(self, job: _Job, data: str) -> bytes:
        """The bytes of a base64 output (plain or a ``data:`` URI), at most ``max_image_bytes``."""
        if data.startswith("data:"):
            data = data.partition(",")[2]
        limit = self.config.max_image_bytes
        if len(data) > limit * 4 // 3 + 4:
            raise self._bad_media(job, f"base64 output over {limit} bytes (max_image_bytes)")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise self._bad_media(job, f"output is neither a URL nor base64 ({exc})") from None

    async def _check(self, job: _Job, kind: str, body: IO[bytes] | bytes) -> CheckedImage:
        """The image of ``body`` once it decoded fully (see ``segmind/media.py``), else
        :class:`_Refetch`; warns about (and counts) a size far from the requested one."""
        async with self._decoders:
            try:
                image = await asyncio.to_thread(check_image, body)
            except NotAnImage as exc:
                raise self._bad_media(job, f"{kind}: {exc}") from None
        request = job.request
        if far_from_requested(request.aspect_ratio, image.width, image.height):
            self.stats.unexpected_sizes += 1
            self._warn_once(
                "size",
                "%s: image of %dx%d for aspect ratio %s (kept; further ones are counted in "
                "unexpected_sizes)",
                request.key,
                image.width,
                image.height,
                request.aspect_ratio,
            )
        return image

    def _bad_media(self, job: _Job, error: str) -> _Refetch:
        self.stats.bad_media += 1
        log.info("%s: %s", job.request.key, error)
        return _Refetch(f"{error}: not stored", retryable=True)

    async def _success(
        self,
        job: _Job,
        image: CheckedImage,
        *,
        inference_time: float | None,
        queue_time: float | None,
        cost: float | None,
    ) -> GenerationResult:
        self._estimator.observe(
            job.request.steps,
            inference_time=inference_time,
            queue_time=queue_time,
            ahead=job.ahead,
        )
        self.stats.completed += 1
        self.stats.completed_by_mode[job.protocol] += 1
        self.stats.cost += cost or 0.0
        await self._open_window().succeeded()
        return GenerationResult(
            request=job.request,
            status="COMPLETED",
            request_id=job.request_id,
            content=image.content,
            content_type=image.content_type,
            inference_time=inference_time,
            queue_time=queue_time,
            cost=cost,
            attempts=job.budget.attempts,
            submitted_at=job.submitted_at,
            completed_at=datetime.now(UTC),
        )

    def _failed(
        self, job: _Job, error: str, *, retryable: bool, timed_out: bool = False
    ) -> GenerationResult:
        self.stats.failed += 1
        log.info("%s failed: %s", job.request.key, error)
        return GenerationResult(
            request=job.request,
            status="FAILED",
            request_id=job.request_id,
            error=error,
            attempts=job.budget.attempts,
            submitted_at=job.submitted_at,
            completed_at=datetime.now(UTC),
            retryable=retryable,
            timed_out=timed_out,
        )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error(http: Transport, response: httpx.Response, body: dict[str, Any]) -> str:
    if body.get("error"):
        return http.scrub(str(body["error"]))
    return f"HTTP {response.status_code}: {http.error_text(response)}"


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None

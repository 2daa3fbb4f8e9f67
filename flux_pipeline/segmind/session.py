"""What the v1, v2 and output units share while an engine is open: one job's state, the
POST that spends the budget, and the two ways a job ends (a checked image, or FAILED)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.segmind.config import EngineConfig
from flux_pipeline.segmind.errors import InsufficientCredits
from flux_pipeline.segmind.estimator import CompletionEstimator, SubmitOrder
from flux_pipeline.segmind.history import AccountRecord, Adopted
from flux_pipeline.segmind.http.bodies import MediaAnswer
from flux_pipeline.segmind.http.client import HttpClient
from flux_pipeline.segmind.http.exceptions import StepFailed
from flux_pipeline.segmind.http.timeouts import Attempts
from flux_pipeline.segmind.media import CheckedImage
from flux_pipeline.segmind.modes import ModeChooser
from flux_pipeline.segmind.pacing import AdaptiveWindow
from flux_pipeline.segmind.results import GenerationResult
from flux_pipeline.segmind.spending import SpendingGuard
from flux_pipeline.segmind.stats import ApiMode, EngineStats, RequestKind

log = logging.getLogger("flux_pipeline.segmind")

#: Called with (request_key, request_id) once a submit is accepted, before polling starts.
SubmittedHook = Callable[[str, str], None]
#: Called with (request_key, UTC send time) before a submit's POST goes out.
SendingHook = Callable[[str, datetime], None]

#: Answers to a submit that end only that image: bad parameters (400), a FAILED job (422).
FINAL_REFUSALS = frozenset({400, 422})


class Refetch(StepFailed):
    """The output could not be taken (a media host's 4xx, a body that is not a whole image):
    ask the result URL again, for a fresh URL or a good copy."""


class BudgetSpent(StepFailed):
    """The budget refused this request: nothing was sent, a later run may submit it."""


@dataclass
class Job:
    request: GenerationRequest
    attempts: Attempts
    request_id: str | None = None
    status_url: str = ""
    response_url: str = ""
    submitted_at: datetime | None = None
    #: Place in the submit order of our unfinished v2 jobs, and how many were ahead of it
    #: when it was accepted (None for a job attached from an earlier run).
    order: int | None = None
    ahead: int | None = None
    mode: ApiMode = "async"
    #: The job holds a place of the budget that no POST has taken over yet.
    reserved: bool = False
    #: The job or its image came from the account's record (an adopted ambiguous submit, an
    #: expired result recovered): ``recovered_from = "history"`` in lineage.
    recovered: bool = False


@dataclass
class Run:
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


@dataclass
class Session:
    """One open engine: its transport and window, and the parts that outlive them."""

    config: EngineConfig
    stats: EngineStats
    http: HttpClient
    window: AdaptiveWindow
    estimator: CompletionEstimator
    order: SubmitOrder
    modes: ModeChooser
    guard: SpendingGuard
    #: Threads of the ``on_submitted`` hook, and the hook (see ``v2.submit``).
    hooks: ThreadPoolExecutor
    on_submitted: SubmittedHook | None
    #: The hook run before each submit's POST (see :data:`SendingHook`).
    on_sending: SendingHook | None
    #: The account's record: ambiguous submits and expired results are resolved there.
    record: AccountRecord
    #: Seconds after a send before a submit not found in the record is deemed never made.
    history_grace: float
    #: Topics already warned about (see :meth:`warn_once`).
    warned: set[str]
    #: Images decoded at once (see ``output.check``).
    decoders: asyncio.Semaphore

    def warn_once(self, topic: str, message: str, *args: object) -> None:
        """Log ``message`` at WARNING the first time ``topic`` comes up, at DEBUG after."""
        level = logging.DEBUG if topic in self.warned else logging.WARNING
        self.warned.add(topic)
        log.log(level, message, *args)

    def next_poll(self, job: Job, misses: int, *, queued: bool) -> float:
        """Seconds until the next poll of ``job``, after ``misses`` polls that found it running."""
        ahead = None if job.order is None else self.order.ahead(job.order)
        return self.estimator.next_poll(job.request.steps, misses, queued=queued, ahead=ahead)

    async def reserve(self, job: Job) -> None:
        """Reserve the job's place in the budget; raises :class:`BudgetSpent` when none is left."""
        refusal = await self.guard.reserve()
        if refusal is not None:
            raise BudgetSpent(f"{refusal}: not submitted", retryable=True)
        job.reserved = True

    async def post(self, job: Job, run: Run, kind: RequestKind, version: str) -> MediaAnswer | None:
        """POST the job to ``/{version}/{model}``; None once submitting has stopped.

        The POST takes over the job's reservation in the budget (see :meth:`reserve`): an
        answer other than 200 gives it back, as does an error before sending.
        """
        job.reserved = False
        if run.stop_submitting:
            await asyncio.shield(self.guard.settle(billed=False))
            return None
        http = self.http
        billed, answer = False, None
        if self.on_sending is not None:
            hook = functools.partial(self.on_sending, job.request.request_key, datetime.now(UTC))
            try:
                await asyncio.get_running_loop().run_in_executor(self.hooks, hook)
            except Exception as exc:  # a send we cannot record is not made
                run.stop(exc)
                await asyncio.shield(self.guard.settle(billed=False))
                return None
        try:
            answer = await http.send_media(
                kind,
                "POST",
                f"{http.base}/{version}/{self.config.model}",
                job.attempts,
                json=job.request.payload(base64=self.config.base64),
                media=kind == "sync",
            )
            billed = answer.response.status_code == 200
        except InsufficientCredits as exc:
            run.stop(exc)
            return None
        except Adopted:
            billed = True  # the job was made: the account's record has it
            raise
        except StepFailed as exc:
            billed = exc.maybe_billed
            raise
        except asyncio.CancelledError:
            billed = job.attempts.unrecorded_submit  # sent, fate unknown: count it
            raise
        finally:
            headers = answer.response.headers if answer is not None and kind == "sync" else {}
            cost = number(headers.get("x-cost")) if billed else None
            await asyncio.shield(self.guard.settle(billed=billed, cost=cost))
        return answer

    async def success(
        self,
        job: Job,
        image: CheckedImage,
        *,
        inference_time: float | None,
        queue_time: float | None,
        cost: float | None,
    ) -> GenerationResult:
        """The COMPLETED result of ``job``, counted and learned from."""
        self.estimator.observe(
            job.request.steps,
            inference_time=inference_time,
            queue_time=queue_time,
            ahead=job.ahead,
        )
        self.stats.completed += 1
        self.stats.completed_by_mode[job.mode] += 1
        self.stats.cost += cost or 0.0
        await self.window.succeeded()
        return GenerationResult(
            request=job.request,
            status="COMPLETED",
            request_id=job.request_id,
            content=image.content,
            content_type=image.content_type,
            width=image.width,
            height=image.height,
            preview=image.preview,
            inference_time=inference_time,
            queue_time=queue_time,
            cost=cost,
            attempts=job.attempts.count,
            submitted_at=job.submitted_at,
            completed_at=datetime.now(UTC),
            recovered_from="history" if job.recovered else None,
        )

    def failed(
        self, job: Job, error: str, *, retryable: bool, timed_out: bool = False
    ) -> GenerationResult:
        """The FAILED result of ``job``, counted and logged."""
        self.stats.failed += 1
        log.info("%s failed: %s", job.request.key, error)
        return GenerationResult(
            request=job.request,
            status="FAILED",
            request_id=job.request_id,
            error=error,
            attempts=job.attempts.count,
            submitted_at=job.submitted_at,
            completed_at=datetime.now(UTC),
            retryable=retryable,
            timed_out=timed_out,
            recovered_from="history" if job.recovered else None,
        )


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object; empty when it is not one."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def error_of(http: HttpClient, response: httpx.Response, body: dict[str, Any]) -> str:
    """Segmind's error text of an answer (key masked), else its status and body start."""
    if body.get("error"):
        return http.scrub(str(body["error"]))
    return f"HTTP {response.status_code}: {http.error_text(response)}"


def number(value: Any) -> float | None:
    """``value`` as a float; None when absent or not a number."""
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None

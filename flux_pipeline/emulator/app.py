"""The Segmind-compatible ASGI app: routes, auth, quotas, faults, slow answers and counters."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from flux_pipeline import protocol
from flux_pipeline.emulator.badmedia import BadMedia
from flux_pipeline.emulator.history import AccountRecord, BadQuery, HistoryQuery, RecordRow
from flux_pipeline.emulator.jobs import InferencePool, Job, JobStore
from flux_pipeline.emulator.limits import (
    FAULTS,
    CreditLedger,
    FaultInjector,
    LatencyInjector,
    RateLimiter,
)
from flux_pipeline.emulator.lost_answers import LostAnswers, hold_until_gone
from flux_pipeline.emulator.params import InvalidParameters, parse_params
from flux_pipeline.emulator.quota import COUNTED_KINDS, SlidingWindowQuota
from flux_pipeline.emulator.settings import COST_PER_JOB, UNLIMITED_BALANCE, EmulatorSettings

REQUEST_KINDS = ("submit", "status", "result", "output", "sync", "history")
#: The API requests a quota can count (media downloads and the record never are).
API_KINDS = ("submit", "status", "result", "sync")
MISSING_KEY = "Missing Authorization or x-api-key in header"

Endpoint = Callable[[Request], Awaitable[Response]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _too_many(message: str, wait: float) -> JSONResponse:
    """429 telling when to come back: ``Retry-After`` in whole seconds (rounded up) and
    ``x-rate-limit-reset-at-utc``, the ISO 8601 UTC time (rounded up to the millisecond)."""
    reset_at = datetime.now(UTC) + timedelta(seconds=wait)
    reset_at += timedelta(microseconds=-reset_at.microsecond % 1000)
    headers = {
        "Retry-After": str(max(1, math.ceil(wait))),
        "x-rate-limit-reset-at-utc": reset_at.isoformat(timespec="milliseconds"),
    }
    return _error(429, message, headers)


def _account(api_key: str) -> str:
    """A stable, non-reversible name for a key, used for per-key quotas."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


class Emulator:
    """The server's state: settings, jobs, slots, quotas, and counters."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.store = JobStore(settings.retention)
        self.record = AccountRecord(settings.history_retention)
        self.lost_answers = LostAnswers(settings)
        self._rows: dict[str, RecordRow] = {}
        self.pool = InferencePool(settings, self.store, self._finished)
        self.credits = CreditLedger(settings.credits, UNLIMITED_BALANCE)
        self.faults = FaultInjector(settings.fault_rate, settings.seed)
        self.latency = LatencyInjector(settings.latency, settings.seed)
        self.slow_answers = 0
        self.slow_seconds = 0.0
        self.limiter = RateLimiter(settings.rate_limit) if settings.rate_limit else None
        self.quota = (
            SlidingWindowQuota(settings.quota_per_minute, settings.quota_window)
            if settings.quota_per_minute
            else None
        )
        self.quota_kinds = COUNTED_KINDS[settings.quota_counts]
        self.quota_refused: Counter[str] = Counter({kind: 0 for kind in API_KINDS})
        self.requests: Counter[str] = Counter({kind: 0 for kind in REQUEST_KINDS})
        self._accounts = {_account(key) for key in settings.api_keys}
        self.bad_media = BadMedia(settings)

    # -- lifecycle --------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self.pool.start()
        sweeper = asyncio.create_task(self._sweep_forever())
        try:
            yield
        finally:
            sweeper.cancel()
            await self.pool.stop()

    async def _sweep_forever(self) -> None:
        interval = min(max(self.settings.retention / 2, 0.05), 10.0)
        while True:
            await asyncio.sleep(interval)
            self.store.sweep()

    def _finished(self, job: Job) -> None:
        job.remaining_credits = self.credits.balance(job.account)
        row = self._rows.pop(job.request_id, None)
        if row is not None:
            # v2 charges a FAILED job (its credits are not given back); v1 refunds it.
            charged = job.status == protocol.COMPLETED or not job.sync
            row.finish(job.status, cost=self.settings.price if charged else 0.0, error=job.error)

    # -- gatekeeping ------------------------------------------------------------------------

    def gate(self, request: Request, kind: str, identity: str) -> tuple[str, Response | None]:
        """Count the request, draw how late its answer goes out (``request.state.delay``), then
        apply faults, auth, and the account's limits, in the gateway's order.

        Returns the caller's account and, when the request is refused, the response to send.
        """
        self.requests[kind] += 1
        request.state.delay = delay = self.latency.delay(kind, identity)
        if delay > 0:
            self.slow_answers += 1
            self.slow_seconds += delay
        fault = self.faults.fault(kind, identity)
        if fault is not None:
            return "", _error(fault, FAULTS[fault])
        if kind == "output":  # media is served like a CDN: no key needed
            return "", None
        api_key = request.headers.get("x-api-key", "")
        account = _account(api_key) if api_key else ""
        if not api_key or (self._accounts and account not in self._accounts):
            return "", _error(401, MISSING_KEY)
        return account, self.limit(account, kind)

    def limit(self, account: str, kind: str) -> Response | None:
        """The 429 for a request past the quota or the rate limit, else None (it is admitted).

        Only an admitted request is recorded, by both: a refused one counts toward neither
        (as with real quotas). A request the quota does not count is never refused by it.
        """
        now = time.monotonic()
        quota = self.quota if kind in self.quota_kinds else None
        if quota is not None:
            wait = quota.wait(account, now)
            if wait > 0:
                self.quota_refused[kind] += 1
                window = f"{quota.window:g} s"
                return _too_many(f"Quota exceeded: {quota.limit} requests per {window}", wait)
        if self.limiter is not None:
            wait = self.limiter.wait(account, now)
            if wait > 0:
                return _too_many("Rate limit exceeded", wait)
            self.limiter.record(account, now)
        if quota is not None:
            quota.record(account, now)
        return None

    def job_identity(self, request_id: str) -> str:
        """What a poll is about, for reproducible faults: the job's request key if known."""
        job = self.store.get(request_id)
        return job.params.request_key if job is not None else request_id

    # -- bodies -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Requests received per kind (refused and faulted included); jobs queued and processing
        now, completed, failed and expired so far, the blank and duplicate pictures served
        (``--blank-rate``, ``--duplicate-rate``), and accepted submits per request key; answers
        sent late (``--latency``) and their total delay; the quota and its refusals per kind."""
        counts = self.store.counts
        return {
            "requests": {kind: self.requests[kind] for kind in REQUEST_KINDS},
            "jobs": {
                "queued": counts["queued"],
                "processing": counts["processing"],
                "completed": counts["completed"],
                "failed": counts["failed"],
                "expired": counts["expired"],
                "blank": self.pool.pictures.served["blank"],
                "duplicate": self.pool.pictures.served["duplicate"],
                "by_request_key": dict(self.store.by_request_key),
            },
            "slow": {"answers": self.slow_answers, "seconds": round(self.slow_seconds, 6)},
            "lost_answers": {
                "dropped": self.lost_answers.dropped,
                "bad_gateway": self.lost_answers.bad_gateway,
            },
            "quota": {
                "limit": self.settings.quota_per_minute,
                "counts": self.settings.quota_counts,
                "window": self.settings.quota_window,
                "refused": {kind: self.quota_refused[kind] for kind in API_KINDS},
            },
        }

    def urls(self, request: Request, request_id: str) -> dict[str, str]:
        """The job's status and result URLs: on ``status_origin`` when set, else our own."""
        base = (self.settings.status_origin or str(request.base_url)).rstrip("/")
        status_url = f"{base}/v2/requests/{request_id}/status"
        return {"status_url": status_url, "response_url": f"{base}/v2/requests/{request_id}"}

    def status_body(self, request: Request, job: Job) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {
            "request_id": job.request_id,
            "status": job.status,
            **self.urls(request, job.request_id),
        }
        if self.settings.metrics:
            body["metrics"] = self.metrics(job) if job.status == protocol.COMPLETED else {}
        if job.status == protocol.FAILED:
            body["error"] = job.error
            return 422, body
        return 200, body

    def metrics(self, job: Job) -> dict[str, Any]:
        return {
            "inference_time": job.inference_time,
            "queue_time": job.queue_time,
            "total_time": job.total_time,
            "cost": self.settings.price,
            "remaining_credits": job.remaining_credits,
        }

    def image_body(self, kind: str, job: Job | RecordRow, output: bytes) -> bytes | None:
        """The image as this answer serves it: ``output``, a bad body, or None for an
        ``oversized`` one to stream (see :mod:`~flux_pipeline.emulator.badmedia`)."""
        if not self.bad_media.pick(kind, job.params.request_key):
            return output
        if self.bad_media.kind == "oversized" and kind != "result":
            return None
        return self.bad_media.body(output)

    def image_response(
        self, kind: str, job: Job | RecordRow, output: bytes, **extra: Any
    ) -> Response:
        """A raw image answer (media download, v1 POST), bad when ``--bad-media`` says so."""
        body = self.image_body(kind, job, output)
        if body is None:
            return StreamingResponse(self.bad_media.stream(), media_type="image/png", **extra)
        html = body is not output and self.bad_media.kind == "html"
        media_type = "text/html" if html else self.settings.content_type
        return Response(body, media_type=media_type, **extra)

    def media_url(self, request: Request, job: Job) -> str:
        base = str(request.base_url).rstrip("/")
        return f"{base}/media/{job.request_id}.{self.settings.output_format}"

    # -- accepting work ---------------------------------------------------------------------

    async def accept(self, request: Request, kind: str) -> tuple[Job | None, Response | None]:
        """Gate, validate and charge a generation request; enqueue it when accepted."""
        raw = await request.body()
        account, refused = self.gate(request, kind, hashlib.sha256(raw).hexdigest())
        if refused is not None:
            return None, refused
        model = request.path_params["model"]
        if model != protocol.MODEL:
            return None, _error(404, f"Model {model} not found")
        try:
            params = parse_params(raw)
        except InvalidParameters as exc:
            return None, _error(400, str(exc))
        if not self.credits.charge(account, COST_PER_JOB):
            return None, _error(406, "Insufficient credits")
        job = Job(params=params, account=account, sync=kind == "sync")
        self.store.add(job)
        media_url = self.media_url(request, job)
        row = self.record.add(job.request_id, account, params, json.loads(raw), media_url)
        self._rows[job.request_id] = row
        self.pool.submit(job)
        return job, None

    async def lose_answer(self, request: Request, kind: str, job: Job) -> Response | None:
        """The answer that replaces an accepted submit's own when it is lost: a 502, or
        nothing at all until the client gives up (``--drop-submit-answers``)."""
        loss = self.lost_answers.pick(kind, job.params.request_key)
        if loss == "502":
            return _error(502, "Bad Gateway")
        if loss == "drop":
            await hold_until_gone(request)
            return Response(status_code=504)  # nobody is left to read it
        return None

    def history_page(self, request: Request) -> Response:
        account, refused = self.gate(request, "history", "history")
        if refused is not None:
            return refused
        try:
            query = HistoryQuery.parse(dict(request.query_params), datetime.now(UTC).date())
        except BadQuery as exc:
            return _error(400, str(exc))
        return JSONResponse(self.record.page(account, query))

    def history_row(self, request: Request) -> Response:
        request_id = request.path_params["request_id"]
        account, refused = self.gate(request, "history", request_id)
        if refused is not None:
            return refused
        row = self.record.get(account, request_id)
        if row is None:
            return _error(404, f"Request {request_id} not found")
        return JSONResponse(row.as_json())


def answered_late(endpoint: Endpoint) -> Endpoint:
    """The endpoint, its answer sent as late as its gate drew (``--latency``)."""

    async def late(request: Request) -> Response:
        response = await endpoint(request)
        delay: float = request.state.delay
        if delay > 0:
            await asyncio.sleep(delay)
        return response

    return late


def create_app(settings: EmulatorSettings) -> Starlette:
    """The ASGI app serving Segmind's protocol for ``fast-flux-schnell``."""
    emulator = Emulator(settings)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def stats(_request: Request) -> Response:
        return JSONResponse(emulator.stats())

    async def submit(request: Request) -> Response:
        job, refused = await emulator.accept(request, "submit")
        if refused is not None or job is None:
            return refused or _error(500, "Internal Server Error")
        lost = await emulator.lose_answer(request, "submit", job)
        if lost is not None:
            return lost
        urls = emulator.urls(request, job.request_id)
        return JSONResponse(
            {
                "request_id": job.request_id,
                "status": protocol.QUEUED,
                "poll_url": urls["status_url"],
                **urls,
            }
        )

    def find_job(request: Request, kind: str) -> Job | Response:
        """The job named in the path, or the refusal / 404 to answer instead."""
        request_id = request.path_params["request_id"]
        _, refused = emulator.gate(request, kind, emulator.job_identity(request_id))
        if refused is not None:
            return refused
        job = emulator.store.get(request_id)
        return _error(404, f"Request {request_id} not found") if job is None else job

    async def status(request: Request) -> Response:
        job = find_job(request, "status")
        if isinstance(job, Response):
            return job
        code, body = emulator.status_body(request, job)
        return JSONResponse(body, status_code=code)

    async def result(request: Request) -> Response:
        job = find_job(request, "result")
        if isinstance(job, Response):
            return job
        if job.status == protocol.FAILED:
            body = {"request_id": job.request_id, "status": job.status, "output": None}
            return JSONResponse({**body, "error": job.error}, status_code=422)
        if job.status != protocol.COMPLETED or job.output is None:
            code, body = emulator.status_body(request, job)
            return JSONResponse(body, status_code=code)
        if job.params.base64:
            image = emulator.image_body("result", job, job.output) or b""
            output = base64.b64encode(image).decode("ascii")
        else:
            output = emulator.media_url(request, job)
        body = {"request_id": job.request_id, "status": job.status, "output": output}
        metrics = {"metrics": emulator.metrics(job)} if settings.metrics else {}
        return JSONResponse({**body, "error": None, **metrics})

    async def media(request: Request) -> Response:
        name = request.path_params["name"]
        request_id, _, extension = name.rpartition(".")
        _, refused = emulator.gate(request, "output", emulator.job_identity(request_id))
        if refused is not None:
            return refused
        job = emulator.store.get(request_id)
        if job is not None and job.output is not None and extension == settings.output_format:
            return emulator.image_response("output", job, job.output)
        row = emulator.record.find(request_id)
        if row is None or row.status != protocol.COMPLETED or extension != settings.output_format:
            return _error(404, f"Output {name} not found")
        # The result has expired, the record has not: the same image, rendered again.
        return emulator.image_response("output", row, await emulator.pool.render(row.params))

    async def sync(request: Request) -> Response:
        if settings.v2_only:  # through the gateway like any request, then no such endpoint
            raw = await request.body()
            _, refused = emulator.gate(request, "sync", hashlib.sha256(raw).hexdigest())
            return refused or _error(404, "Not Found")
        job, refused = await emulator.accept(request, "sync")
        if refused is not None or job is None:
            return refused or _error(500, "Internal Server Error")
        lost = await emulator.lose_answer(request, "sync", job)
        if lost is not None:
            return lost
        await job.done.wait()
        if job.status != protocol.COMPLETED or job.output is None:
            emulator.credits.refund(job.account, COST_PER_JOB)
            return _error(422, job.error or "Inference failed")
        headers = {
            "x-remaining-credits": str(job.remaining_credits),
            "x-cost": str(settings.price),
            "x-generation-time": str(job.inference_time),
            "x-seed-value": str(job.params.seed),
            "x-request-id": job.request_id,
        }
        if job.params.base64:
            image = emulator.image_body("result", job, job.output) or b""
            return JSONResponse({"image": base64.b64encode(image).decode("ascii")}, headers=headers)
        return emulator.image_response("sync", job, job.output, headers=headers)

    async def history(request: Request) -> Response:
        return emulator.history_page(request)

    async def history_row(request: Request) -> Response:
        return emulator.history_row(request)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/inference-request/request-history", answered_late(history), methods=["GET"]),
        Route(
            "/inference-request/request-history/{request_id}",
            answered_late(history_row),
            methods=["GET"],
        ),
        Route("/_emulator/stats", stats, methods=["GET"]),
        Route("/media/{name}", answered_late(media), methods=["GET"]),
        Route("/v1/{model}", answered_late(sync), methods=["POST"]),
        Route("/v2/requests/{request_id}/status", answered_late(status), methods=["GET"]),
        Route("/v2/requests/{request_id}", answered_late(result), methods=["GET"]),
        Route("/v2/{model}", answered_late(submit), methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=emulator.lifespan)

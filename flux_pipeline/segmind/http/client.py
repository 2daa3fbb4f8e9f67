"""The engine's HTTP client: every request sent, paced, retried with backoff, and classified."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from flux_pipeline.segmind.config import EngineConfig
from flux_pipeline.segmind.errors import AuthenticationError, InsufficientCredits
from flux_pipeline.segmind.http import messages
from flux_pipeline.segmind.http.backoff import RETRY_STATUSES, backoff_delay, retry_after
from flux_pipeline.segmind.http.bodies import JSON_LIMIT, BodyReader, MediaAnswer, read_back
from flux_pipeline.segmind.http.exceptions import (
    NOT_SENT,
    REFUSED_LOCALLY,
    AnswerTooLarge,
    StepFailed,
)
from flux_pipeline.segmind.http.key_scope import KeyScope, api_base
from flux_pipeline.segmind.http.proxy import engine_transport
from flux_pipeline.segmind.http.timeouts import Attempts, read_timeout, request_timeouts
from flux_pipeline.segmind.pacing import AdaptiveWindow, RequestPacer
from flux_pipeline.segmind.stats import EngineStats, RequestKind

log = logging.getLogger("flux_pipeline.segmind")

#: Seconds an idle pooled connection is kept: below uvicorn's/nginx's usual 5 s, so we do not
#: reuse a connection the server is closing (a POST on it would end "answer never arrived").
_KEEPALIVE_EXPIRY: Final = 2.0


class HttpClient:
    """Sends every request of the engine: paced, retried, classified, key kept private."""

    def __init__(
        self,
        config: EngineConfig,
        stats: EngineStats,
        window: AdaptiveWindow,
        pacer: RequestPacer,
    ) -> None:
        if not config.api_key:
            raise AuthenticationError(messages.NO_KEY)
        self.base = api_base(config.base_url)
        self.keys = KeyScope(self.base, config.api_key)
        self._config = config
        self._stats = stats
        self._window = window
        self._pacer = pacer
        json_limit = JSON_LIMIT
        if config.base64:  # room for a base64 image when outputs come inline
            json_limit += config.max_image_bytes * 4 // 3
        self._bodies = BodyReader(json_limit, config.max_image_bytes, stats)
        pool = config.max_concurrency + 4
        limits = httpx.Limits(
            max_connections=pool, max_keepalive_connections=pool, keepalive_expiry=_KEEPALIVE_EXPIRY
        )
        self._transport = engine_transport(limits)

    async def aclose(self) -> None:
        await self._transport.aclose()

    @property
    def stats(self) -> EngineStats:
        """The counters this client adds to."""
        return self._stats

    def trust(self, url: str) -> bool:
        """See :meth:`KeyScope.trust`."""
        return self.keys.trust(url)

    def scrub(self, text: str) -> str:
        """See :meth:`KeyScope.scrub`."""
        return self.keys.scrub(text)

    def error_text(self, response: httpx.Response) -> str:
        """Segmind's ``error`` text of an answer (or the start of its body), key masked."""
        return messages.error_text(response, self.keys.scrub)

    async def send(
        self,
        kind: RequestKind,
        method: str,
        url: str,
        attempts: Attempts,
        *,
        json: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Send until an answer that is not transient; raise on 401/403/406 and give-ups.

        Returns every other answer (200, 400, 404, 422, ...) for the caller to interpret.
        API requests are paced; media downloads (``kind="download"``) never are. The body
        is read up to a cap (:class:`AnswerTooLarge` past it for a 200 answer).
        """
        answer = await self.send_media(kind, method, url, attempts, json=json, media=False)
        return answer.response

    async def send_media(
        self,
        kind: RequestKind,
        method: str,
        url: str,
        attempts: Attempts,
        *,
        json: dict[str, Any] | None = None,
        media: bool = True,
    ) -> MediaAnswer:
        """:meth:`send` for an answer that may be an image: a 200 body that is not JSON is
        read up to ``max_image_bytes`` into :attr:`MediaAnswer.body` (close it after use)."""
        try:
            return await self._send(kind, method, url, attempts, json=json, media=media)
        except StepFailed as exc:
            # One of the attempts was a submit whose answer never arrived.
            exc.maybe_billed = exc.maybe_billed or attempts.maybe_billed
            raise

    async def _send(
        self,
        kind: RequestKind,
        method: str,
        url: str,
        attempts: Attempts,
        *,
        json: dict[str, Any] | None,
        media: bool,
    ) -> MediaAnswer:
        config = self._config
        failures = 0
        api = kind != "download"
        while True:
            if api and not attempts.paced:
                await self._pacer.wait()
            attempts.paced = False
            timeout = read_timeout(kind, method, attempts, config.request_timeout, config.deadline)
            attempts.count += 1
            attempts.sent_at = datetime.now(UTC)
            self._stats.requests[kind] += 1
            delay: float | None = None
            attempts.unrecorded_submit = method == "POST"
            try:
                answer = await self._exchange(kind, method, url, json, timeout, media=media)
            except AnswerTooLarge:
                attempts.unrecorded_submit = False  # answered: a 200 to a POST is billed
                attempts.maybe_billed = attempts.maybe_billed or method == "POST"
                raise
            except httpx.TransportError as exc:
                attempts.unrecorded_submit = False
                error = self._transport_failed(kind, method, exc, attempts)
            else:
                response = answer.response
                status = response.status_code
                attempts.unrecorded_submit = attempts.unrecorded_submit and status == 200
                if api and status != 429:
                    self._pacer.answered()
                if self._final(kind, url, status, response):
                    return answer
                error = f"{kind}: HTTP {status}: {self.error_text(response)}"
                delay = retry_after(response)
                self._transient(api, status, delay)
                if method == "POST" and status != 429 and attempts.on_submit_fault is not None:
                    await attempts.on_submit_fault()  # the job may exist: raises when found
            failures += 1
            if failures > config.max_retries:
                raise StepFailed(f"{error} (gave up after {failures} attempts)", retryable=True)
            delay = backoff_delay(failures, config.backoff_base, config.backoff_max, delay)
            if delay >= attempts.remaining():
                raise StepFailed(
                    f"{error} (deadline of {config.deadline:g} s reached)",
                    retryable=True,
                    timed_out=True,
                )
            self._stats.retries += 1
            log.debug("%s retry %d in %.2f s after %s", kind, failures, delay, error)
            await asyncio.sleep(delay)

    def _transport_failed(
        self, kind: RequestKind, method: str, exc: httpx.TransportError, attempts: Attempts
    ) -> str:
        """The error text of a transport error worth retrying; raises for the others."""
        self._stats.transport_errors += 1
        error = f"{kind}: {type(exc).__name__}: {self.scrub(str(exc)) or 'no detail'}"
        if isinstance(exc, REFUSED_LOCALLY):
            raise StepFailed(f"{error} (refused before sending)", retryable=True) from None
        if method == "POST" and not isinstance(exc, NOT_SENT):
            self._stats.ambiguous_submits += 1
            attempts.maybe_billed = True
            log.info("submit answer lost (%s); not re-POSTed", type(exc).__name__)
            raise StepFailed(
                f"{error}; the submit was sent but its answer never arrived, so the job may "
                "exist and be billed: not re-POSTed blindly",
                retryable=True,
            ) from None
        return error

    def _final(self, kind: RequestKind, url: str, status: int, response: httpx.Response) -> bool:
        """Whether the answer goes to the caller; raises on a refused key or spent credits."""
        if status in (401, 403, 406) and not self._sends_key(kind, url):
            return True  # a media host's refusal (an expired signed URL) says nothing of the key
        if status in (401, 403):
            detail = self.error_text(response)
            raise AuthenticationError(
                messages.key_refused(status, detail, self.base, self._config.model)
            )
        if status == 406:
            raise InsufficientCredits(messages.out_of_credits(self.error_text(response)))
        return status not in RETRY_STATUSES

    def _transient(self, api: bool, status: int, hint: float | None) -> None:
        """Count a transient answer; a 429 of the API slows the pacer and the window."""
        if status == 429:
            self._stats.rate_limited += 1
            if api:  # a media host's 429 says nothing of the account's quota
                self._pacer.rate_limited(hint or 1.0)
                self._window.rate_limited(hint or 1.0)
        else:
            self._stats.server_errors += 1

    async def _exchange(
        self,
        kind: RequestKind,
        method: str,
        url: str,
        json: dict[str, Any] | None,
        read_after: float,
        *,
        media: bool,
    ) -> MediaAnswer:
        """One request; its body read up to its cap, never further (see :class:`BodyReader`).

        A download takes one of the few body readers' turns before it is sent (the body
        arrives at once); a v1 POST only once its answer is there (it waits for the inference).
        """
        bodies = self._bodies
        async with contextlib.AsyncExitStack() as held:
            if kind == "download":
                await held.enter_async_context(bodies.turns)
            headers = {"user-agent": "flux-pipeline"}
            if self._sends_key(kind, url):
                headers["x-api-key"] = self._config.api_key
            request = httpx.Request(
                method,
                url,
                json=json,
                headers=headers,
                extensions={"timeout": request_timeouts(read_after)},
            )
            response = await self._transport.handle_async_request(request)
            response.request = request
            held.push_async_callback(response.aclose)
            is_json = response.headers.get("content-type", "").startswith("application/json")
            if media and response.status_code == 200 and not is_json:
                if kind != "download":
                    await held.enter_async_context(bodies.turns)
                body = await bodies.spool(kind, method, response)
                return MediaAnswer(read_back(response), body)
            content = await bodies.read(kind, method, response)
            return MediaAnswer(read_back(response, content))

    def _sends_key(self, kind: RequestKind, url: str) -> bool:
        """The key goes to trusted API origins only, never to a media host."""
        return kind != "download" and self.keys.sends_key(url)

"""One pooled HTTP client with pacing, retries and error classification for every step."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit
from urllib.request import getproxies

import httpx

from flux_pipeline.segmind.config import EngineConfig
from flux_pipeline.segmind.errors import AuthenticationError, InsufficientCredits
from flux_pipeline.segmind.network import PooledTransport
from flux_pipeline.segmind.pacing import AdaptiveWindow, RequestPacer
from flux_pipeline.segmind.stats import EngineStats, RequestKind

log = logging.getLogger("flux_pipeline.segmind")

#: Answers worth asking again: rate limited, or a transient server fault.
RETRY_STATUSES = frozenset({429, 500, 502, 504})
#: Transport errors raised before the request reached the server: a submit is safe to resend.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteError)
#: Errors raised by our own side before anything was sent, the same on every attempt
#: (a header value h11 refuses, a URL scheme httpx cannot speak): never retried.
_REFUSED_LOCALLY = (httpx.LocalProtocolError, httpx.UnsupportedProtocol)
#: Seconds an idle pooled connection is kept: below uvicorn's/nginx's usual 5 s, so we do not
#: reuse a connection the server is closing (a POST on it would end "answer never arrived").
_KEEPALIVE_EXPIRY = 2.0
#: Seconds to wait for a connection (at most: never more than the request's own timeout).
_CONNECT = 10.0
#: Bytes of a JSON answer read when outputs come as URLs (status bodies are under 1 KB).
_JSON_LIMIT = 1024 * 1024
#: An image body is kept in memory up to this size, then spooled to a temporary file.
_SPOOL_IN_MEMORY = 4 * 1024 * 1024
#: Image bodies read at once. The network layer buffers ahead of the reader without limit
#: (anyio's asyncio stream never pauses reading), up to about 3x what the reader took by
#: the time it stops at the cap, so each read may hold ~4 x max_image_bytes: bound the reads.
_BODY_READERS = 3
#: Headers of a body that no longer apply once it has been read (and decoded) here.
_BODY_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class StepFailed(Exception):
    """One step of one image could not be done; becomes a FAILED result."""

    def __init__(
        self, error: str, *, retryable: bool, timed_out: bool = False, maybe_billed: bool = False
    ) -> None:
        super().__init__(error)
        self.error = error
        self.retryable = retryable
        self.timed_out = timed_out
        #: A submit was sent and its answer never arrived: the job may exist and be billed.
        self.maybe_billed = maybe_billed


class AnswerTooLarge(StepFailed):
    """A 200 answer's body was larger than its cap: reading stopped there."""


@dataclass
class MediaAnswer:
    """An answer whose 200 body may be an image: ``body`` holds it (spooled to a temporary
    file past a few MiB); other answers keep their (capped) body in ``response``."""

    response: httpx.Response
    body: IO[bytes] | None = field(default=None, repr=False)

    def __enter__(self) -> MediaAnswer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.body is not None:
            self.body.close()


@dataclass
class Budget:
    """What one image may still spend: time until its deadline; attempts made so far."""

    deadline_at: float
    attempts: int = 0
    #: UTC time the latest request was sent (for a submit: the accepted one).
    sent_at: datetime | None = None
    #: A POST was sent and no answer has ruled its job out yet: the job may exist (and be
    #: billed) while its id is not recorded. The engine clears it once the id is recorded.
    unrecorded_submit: bool = False
    #: A POST of this image was sent and its answer never arrived (it may be billed).
    maybe_billed: bool = False
    #: The next request already has its place from the pacer (taken by the caller).
    paced: bool = False

    def remaining(self) -> float:
        return self.deadline_at - time.monotonic()


def api_base(base_url: str) -> str:
    """``https://api.segmind.com`` from any of it, ``.../``, ``.../v1`` or ``.../v2``."""
    base = base_url.strip().rstrip("/")
    if base.rsplit("/", 1)[-1] in ("v1", "v2"):
        base = base.rsplit("/", 1)[0]
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"SEGMIND_BASE_URL must be an http(s) URL, got {base_url!r}")
    return base


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def registrable_domain(host: str) -> str:
    """The host's last two labels (``queue.segmind.com`` -> ``segmind.com``); an IP address
    or a single label stands for itself. A plain rule, not the public suffix list: under a
    two-label public suffix (``co.uk``) it groups hosts of different owners."""
    host = host.lower().rstrip(".")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return ".".join(host.split(".")[-2:])
    return host


def may_receive_key(base: str, url: str) -> bool:
    """Whether ``url``, named by the API at ``base``, may be sent the key: the API's own origin,
    or an https origin on the API's registrable domain (never http when ``base`` is https)."""
    if _origin(url) == _origin(base):
        return True
    api, named = urlsplit(base), urlsplit(url)
    if named.scheme != "https" or not named.hostname or not api.hostname:
        return False
    return registrable_domain(named.hostname) == registrable_domain(api.hostname)


def _read_back(response: httpx.Response, content: bytes = b"") -> httpx.Response:
    """A streamed answer's status and headers with ``content``, the body as read here."""
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _BODY_HEADERS]
    return httpx.Response(
        response.status_code, headers=headers, content=content, request=response.request
    )


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait (``Retry-After`` or ``x-rate-limit-reset-at-utc``)."""
    waits = [
        wait
        for wait in (
            _seconds_until(response.headers.get("retry-after"), relative=True),
            _seconds_until(response.headers.get("x-rate-limit-reset-at-utc"), relative=False),
        )
        if wait is not None
    ]
    return max(0.0, *waits) if waits else None


def _seconds_until(value: str | None, *, relative: bool) -> float | None:
    """A header as seconds from now: delta seconds, epoch (s or ms), HTTP date or ISO 8601."""
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        if relative:
            return number
        return (number / 1000 if number > 1e11 else number) - time.time()
    for parse in (parsedate_to_datetime, datetime.fromisoformat):
        try:
            at = parse(value.replace("Z", "+00:00") if parse is datetime.fromisoformat else value)
        except (TypeError, ValueError):
            continue
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        return (at - datetime.now(UTC)).total_seconds()
    return None


class Transport:
    """Sends every request of the engine: paced, retried, classified, key kept private."""

    def __init__(
        self,
        config: EngineConfig,
        stats: EngineStats,
        window: AdaptiveWindow,
        pacer: RequestPacer,
    ) -> None:
        if not config.api_key:
            raise AuthenticationError(
                "No Segmind API key configured: set SEGMIND_API_KEY (or unset SEGMIND_BASE_URL "
                "too, to use the local emulator)."
            )
        self.base = api_base(config.base_url)
        self._config = config
        self._stats = stats
        self._window = window
        self._pacer = pacer
        self._trusted = {_origin(self.base)}
        self._body_readers = asyncio.Semaphore(_BODY_READERS)
        pool = config.max_concurrency + 4
        limits = httpx.Limits(
            max_connections=pool, max_keepalive_connections=pool, keepalive_expiry=_KEEPALIVE_EXPIRY
        )
        # Requests go straight to the engine's pool. Behind a proxy from the environment they
        # go through httpx's client instead, which routes them through it.
        self._http: httpx.AsyncBaseTransport | httpx.AsyncClient = (
            httpx.AsyncClient(limits=limits) if getproxies() else PooledTransport(limits)
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def trust(self, url: str) -> bool:
        """Send the key to ``url``'s origin too, if :func:`may_receive_key` allows it.

        Returns whether the key may go to ``url``.
        """
        if not may_receive_key(self.base, url):
            return False
        self._trusted.add(_origin(url))
        return True

    def scrub(self, text: str) -> str:
        """``text`` with the key masked (also as quoted in a ``repr`` of str or bytes)."""
        key = self._config.api_key
        if not key:
            return text
        for form in sorted({key, repr(key)[1:-1], repr(key.encode())[2:-1]}, key=len, reverse=True):
            text = text.replace(form, "***")
        return text

    def error_text(self, response: httpx.Response) -> str:
        """Segmind's ``error`` text of an answer (or the start of its body)."""
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            for name in ("error", "message", "detail"):
                if body.get(name):
                    return self.scrub(str(body[name]))
        return self.scrub(response.text[:300].strip() or response.reason_phrase)

    async def send(
        self,
        kind: RequestKind,
        method: str,
        url: str,
        budget: Budget,
        *,
        json: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Send until an answer that is not transient; raise on 401/403/406 and give-ups.

        Returns every other answer (200, 400, 404, 422, ...) for the caller to interpret.
        API requests are paced; media downloads (``kind="download"``) never are. The body
        is read up to a cap (:class:`AnswerTooLarge` past it for a 200 answer).
        """
        answer = await self.send_media(kind, method, url, budget, json=json, media=False)
        return answer.response

    async def send_media(
        self,
        kind: RequestKind,
        method: str,
        url: str,
        budget: Budget,
        *,
        json: dict[str, Any] | None = None,
        media: bool = True,
    ) -> MediaAnswer:
        """:meth:`send` for an answer that may be an image: a 200 body that is not JSON is
        read up to ``max_image_bytes`` into :attr:`MediaAnswer.body` (close it after use)."""
        try:
            return await self._send(kind, method, url, budget, json=json, media=media)
        except StepFailed as exc:
            # One of the attempts was a submit whose answer never arrived (reposts allowed).
            exc.maybe_billed = exc.maybe_billed or budget.maybe_billed
            raise

    async def _send(
        self,
        kind: RequestKind,
        method: str,
        url: str,
        budget: Budget,
        *,
        json: dict[str, Any] | None,
        media: bool,
    ) -> MediaAnswer:
        failures = 0
        api = kind != "download"
        while True:
            if api and not budget.paced:
                await self._pacer.wait()
            budget.paced = False
            timeout = self._timeout(kind, method, budget)
            budget.attempts += 1
            budget.sent_at = datetime.now(UTC)
            self._stats.requests[kind] += 1
            delay: float | None = None
            budget.unrecorded_submit = method == "POST"
            try:
                answer = await self._exchange(kind, method, url, json, timeout, media=media)
            except AnswerTooLarge:
                budget.unrecorded_submit = False  # answered: a 200 to a POST is billed
                budget.maybe_billed = budget.maybe_billed or method == "POST"
                raise
            except httpx.TransportError as exc:
                budget.unrecorded_submit = False
                self._stats.transport_errors += 1
                error = f"{kind}: {type(exc).__name__}: {self.scrub(str(exc)) or 'no detail'}"
                if isinstance(exc, _REFUSED_LOCALLY):
                    raise StepFailed(f"{error} (refused before sending)", retryable=True) from None
                if method == "POST" and not isinstance(exc, _NOT_SENT):
                    self._stats.ambiguous_submits += 1
                    budget.maybe_billed = True
                    if not self._config.repost_ambiguous_submits:
                        log.warning("submit answer lost (%s); not re-POSTed", type(exc).__name__)
                        raise StepFailed(
                            f"{error}; the submit was sent but its answer never arrived, so the "
                            "job may exist and be billed: not re-POSTed (set "
                            "repost_ambiguous_submits to allow it)",
                            retryable=True,
                        ) from None
            else:
                response = answer.response
                status = response.status_code
                budget.unrecorded_submit = budget.unrecorded_submit and status == 200
                if api and status != 429:
                    self._pacer.answered()
                if status in (401, 403, 406) and not self._sends_key(kind, url):
                    # A media host's refusal (an expired signed URL) says nothing of the key.
                    return answer
                if status in (401, 403):
                    raise AuthenticationError(self._auth_message(status, response))
                if status == 406:
                    raise InsufficientCredits(
                        f"Segmind answered HTTP 406 ({self.error_text(response)}): the account "
                        "behind SEGMIND_API_KEY is out of credits. Top it up and run again; "
                        "images already generated are kept and not paid for twice."
                    )
                if status not in RETRY_STATUSES:
                    return answer
                error = f"{kind}: HTTP {status}: {self.error_text(response)}"
                delay = retry_after(response)
                if status == 429:
                    self._stats.rate_limited += 1
                    if api:  # a media host's 429 says nothing of the account's quota
                        self._pacer.rate_limited(delay or 1.0)
                        self._window.rate_limited(delay or 1.0)
                else:
                    self._stats.server_errors += 1
            failures += 1
            if failures > self._config.max_retries:
                raise StepFailed(f"{error} (gave up after {failures} attempts)", retryable=True)
            cap = min(self._config.backoff_max, self._config.backoff_base * 2 ** (failures - 1))
            # Full jitter, never less than the server asked (a hint of 0 s or a reset time in
            # the past by clock skew must not turn into an immediate retry).
            delay = max(delay or 0.0, random.uniform(0, cap))
            if delay >= budget.remaining():
                raise StepFailed(
                    f"{error} (deadline of {self._config.deadline:g} s reached)",
                    retryable=True,
                    timed_out=True,
                )
            self._stats.retries += 1
            log.debug("%s retry %d in %.2f s after %s", kind, failures, delay, error)
            await asyncio.sleep(delay)

    def _timeout(self, kind: RequestKind, method: str, budget: Budget) -> float:
        """Read timeout of the next request; raises once a POST could only go out too late.

        A POST's answer is never cut short (a submit timed out after sending may be billed
        with its id lost), and none is sent past the deadline; a GET is safe to cut short.
        """
        remaining = budget.remaining()
        if method != "POST":
            return min(self._config.request_timeout, max(remaining, 0.1))
        if remaining <= 0:
            raise StepFailed(
                f"{kind}: deadline of {self._config.deadline:g} s reached before the request "
                "was sent (nothing submitted, nothing billed)",
                retryable=True,
                timed_out=True,
            )
        return self._config.request_timeout

    async def _exchange(
        self,
        kind: RequestKind,
        method: str,
        url: str,
        json: dict[str, Any] | None,
        read_timeout: float,
        *,
        media: bool,
    ) -> MediaAnswer:
        """One request; its body read up to its cap, never further (see :meth:`_read`).

        A download takes one of the few body readers before it is sent (the body arrives at
        once); a v1 POST only once its answer is there (it waits for the inference first).
        """
        async with contextlib.AsyncExitStack() as held:
            if kind == "download":
                await held.enter_async_context(self._body_readers)
            headers = {"user-agent": "flux-pipeline"}
            if self._sends_key(kind, url):
                headers["x-api-key"] = self._config.api_key
            timeouts = {"read": read_timeout, "write": read_timeout, "pool": read_timeout}
            request = httpx.Request(
                method,
                url,
                json=json,
                headers=headers,
                extensions={"timeout": {**timeouts, "connect": min(read_timeout, _CONNECT)}},
            )
            if isinstance(self._http, httpx.AsyncClient):
                response = await self._http.send(request, stream=True)
            else:
                response = await self._http.handle_async_request(request)
                response.request = request
            held.push_async_callback(response.aclose)
            is_json = response.headers.get("content-type", "").startswith("application/json")
            if media and response.status_code == 200 and not is_json:
                if kind != "download":
                    await held.enter_async_context(self._body_readers)
                body = await self._spool(kind, method, response)
                return MediaAnswer(_read_back(response), body)
            content = await self._read(kind, method, response, self._json_limit)
            return MediaAnswer(_read_back(response, content))

    @property
    def _json_limit(self) -> int:
        """Cap of a JSON answer: room for a base64 image when outputs come inline."""
        if not self._config.base64:
            return _JSON_LIMIT
        return self._config.max_image_bytes * 4 // 3 + _JSON_LIMIT

    async def _read(self, kind: str, method: str, response: httpx.Response, limit: int) -> bytes:
        """The body up to ``limit`` bytes: past it a 200 fails, another answer is cut short
        (only its error text is used)."""
        self._refuse_declared(kind, method, response, limit)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                if response.status_code == 200:
                    raise self._too_large(kind, method, f"more than {limit} bytes")
                return bytes(body[:limit])
        return bytes(body)

    async def _spool(self, kind: str, method: str, response: httpx.Response) -> IO[bytes]:
        """The image body, up to ``max_image_bytes``: in memory up to a few MiB, then in a
        temporary file, so a body's size never decides the memory it takes."""
        limit = self._config.max_image_bytes
        self._refuse_declared(kind, method, response, limit)
        sink = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
        try:
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise self._too_large(
                        kind, method, f"more than {limit} bytes (max_image_bytes)"
                    )
                sink.write(chunk)
            sink.seek(0)
        except BaseException:
            sink.close()
            raise
        return sink

    def _refuse_declared(
        self, kind: str, method: str, response: httpx.Response, limit: int
    ) -> None:
        declared = response.headers.get("content-length", "")
        if response.status_code == 200 and declared.isdigit() and int(declared) > limit:
            raise self._too_large(kind, method, f"{declared} bytes declared, over {limit}")

    def _too_large(self, kind: str, method: str, detail: str) -> AnswerTooLarge:
        self._stats.oversized_answers += 1
        return AnswerTooLarge(
            f"{kind}: answer too large ({detail}); not read further",
            retryable=True,
            maybe_billed=method == "POST",
        )

    def _sends_key(self, kind: RequestKind, url: str) -> bool:
        """The key goes to trusted API origins only, never to a media host."""
        return kind != "download" and _origin(url) in self._trusted

    def _auth_message(self, status: int, response: httpx.Response) -> str:
        return (
            f"Segmind refused the API key (HTTP {status}: {self.error_text(response)}) at "
            f"{self.base}. Check that SEGMIND_API_KEY holds a valid key for this account and "
            f"model {self._config.model!r}, and that SEGMIND_BASE_URL points at the right "
            "service (unset both to use the local emulator)."
        )

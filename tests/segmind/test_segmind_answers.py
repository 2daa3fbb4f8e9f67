"""The engine against answers the emulator never gives, from scripted loopback peers.

Each peer answers real HTTP on loopback the way the real service (or its CDN) may: a
``.env`` key with a line ending, a submit answered after the deadline, a mistyped base URL,
an expired signed media URL, the result URL's own "not ready" answers.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from flux_pipeline.segmind import (
    AuthenticationError,
    EngineConfig,
    ModelNotFound,
    SegmindEngine,
)
from tests.support.loopback import TEST_KEY, fast_config
from tests.support.segmind_support import (
    JPEG,
    Answer,
    accepted,
    batch,
    jpeg,
    run_engine,
    scripted_server,
)

IMAGE = base64.b64encode(jpeg()).decode()
DONE = {"status": "COMPLETED", "output": IMAGE, "metrics": {"inference_time": 0.1}}


def kinds(received: list[str]) -> Counter[str]:
    """How many submits, status polls, result fetches and media downloads a peer received."""
    counts: Counter[str] = Counter()
    for line in received:
        method, path = line.split(" ", 1)
        if method == "POST":
            counts["submit"] += 1
        elif path.endswith("/status"):
            counts["status"] += 1
        elif path.startswith("/v2/requests/"):
            counts["result"] += 1
        else:
            counts["download"] += 1
    return counts


# --- the key ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\t", " "])
def test_a_key_with_a_line_ending_is_sent_bare(emulator: Any, ending: str) -> None:
    """A key file written by ``echo`` or a CRLF .env: nothing leaks, nothing is ambiguous."""
    results, stats = run_engine(fast_config(emulator.url, api_key=TEST_KEY + ending), batch(2))

    assert [r.status for r in results] == ["COMPLETED"] * 2, [r.error for r in results]
    assert stats.ambiguous_submits == 0


@pytest.mark.parametrize("inside", ["\n", "\x00", " ", "é"])
def test_a_key_that_cannot_be_a_header_is_refused_without_quoting_it(inside: str) -> None:
    key = TEST_KEY[:8] + inside + TEST_KEY[8:]

    with pytest.raises(AuthenticationError, match="SEGMIND_API_KEY") as raised:
        EngineConfig(api_key=key)

    for form in (TEST_KEY[:8], TEST_KEY[8:], repr(key)):
        assert form not in str(raised.value)
        assert form not in repr(raised.value)


def test_a_key_echoed_in_its_bytes_repr_is_masked() -> None:
    key = "SG_0123\\456789abc"  # a backslash: repr() doubles it, so a plain replace misses it
    echoed = f"Illegal header value {key.encode()!r}"

    with scripted_server(lambda _method, _path: Answer(400, {"error": echoed})) as (url, _):
        (result,), _stats = run_engine(fast_config(url, api_key=key), batch(1))

    assert result.status == "FAILED"
    assert "Illegal header value" in (result.error or "")
    assert "0123" not in (result.error or "")


def test_status_urls_on_another_scheme_are_not_followed_but_the_documented_ones() -> None:
    def script(method: str, path: str) -> Answer:
        if method == "POST":
            body = {"request_id": "r1", "status": "QUEUED", "status_url": "ftp://127.0.0.1/r1"}
            return Answer(body={**body, "response_url": "ftp://127.0.0.1/r1"})
        return Answer(422, {"status": "FAILED", "error": "flagged by the safety filter"})

    with scripted_server(script) as (url, received):
        (result,), stats = run_engine(fast_config(url, prior_step_time=0.0), batch(1))

    assert result.status == "FAILED"
    assert result.error == "flagged by the safety filter"
    assert stats.transport_errors == 0
    assert received == ["POST /v2/fast-flux-schnell", "GET /v2/requests/r1"]


# --- the deadline and submits ----------------------------------------------------------------


def test_a_submit_answered_after_the_deadline_is_waited_for_and_its_id_kept() -> None:
    """A POST's read timeout is never cut to what is left of the deadline: its id matters."""
    recorded: dict[str, str] = {}

    def script(method: str, _path: str) -> Answer:
        return Answer(delay=0.3, body=accepted(url, "r1").body)

    with scripted_server(script) as (url, received):
        (result,), stats = run_engine(
            fast_config(url, deadline=0.1), batch(1), on_submitted=recorded.__setitem__
        )

    assert list(recorded.values()) == ["r1"]
    assert stats.ambiguous_submits == 0
    assert result.status == "FAILED"
    assert result.timed_out
    assert result.retryable
    assert result.request_id == "r1"
    assert kinds(received)["submit"] == 1


def test_no_submit_is_sent_once_the_deadline_has_passed(emulator: Any) -> None:
    """Paced 120 requests/min, a 0.3 s deadline lets only the first of three submits out."""
    results, stats = run_engine(
        fast_config(emulator.url, deadline=0.3, requests_per_minute=120), batch(3)
    )

    assert emulator.stats()["requests"]["submit"] == 1
    assert stats.ambiguous_submits == 0
    unsent = [r for r in results if r.request_id is None]
    assert len(unsent) == 2
    assert all(r.retryable and r.timed_out for r in unsent)
    assert all("nothing submitted" in (r.error or "") for r in unsent)


# --- 4xx answers -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_wrong_base_url_ends_the_run_naming_it_and_the_model(emulator: Any, mode: str) -> None:
    results: list[Any] = []

    with pytest.raises(ModelNotFound) as raised:
        run_engine(
            fast_config(emulator.url + "/api", mode=mode, max_concurrency=2),
            batch(10),
            collected=results,
        )

    assert isinstance(raised.value, AuthenticationError)  # callers that stop on auth stop here
    assert "SEGMIND_BASE_URL" in str(raised.value)
    assert "fast-flux-schnell" in str(raised.value)
    assert TEST_KEY not in str(raised.value)
    assert results == []


@pytest.mark.parametrize("code", [405, 409, 410, 413])
def test_an_unexpected_4xx_to_a_submit_is_not_final(code: int) -> None:
    with scripted_server(lambda _m, _p: Answer(code, {"error": "odd"})) as (url, _):
        (result,), _stats = run_engine(fast_config(url), batch(1))

    assert result.status == "FAILED"
    assert result.retryable
    assert f"HTTP {code}" in (result.error or "")


def test_a_4xx_to_a_status_poll_does_not_abandon_the_paid_job() -> None:
    def script(method: str, path: str) -> Answer:
        if method == "POST":
            return accepted(url, "r1")
        if path.endswith("/status"):
            return Answer(410, {"error": "gone for now"})
        return Answer(body={"status": "PROCESSING"}, status=503)

    with scripted_server(script) as (url, _):
        (result,), _stats = run_engine(fast_config(url, prior_step_time=0.0), batch(1))

    assert result.status == "FAILED"
    assert result.retryable
    assert result.request_id == "r1"


def _cdn_then_api(refusals: int) -> Any:
    """An API on 127.0.0.1 whose outputs live on a media host at 127.0.0.2 that answers 403
    (an expired signed URL) ``refusals`` times before serving the image."""
    served: Counter[str] = Counter()

    def media(_method: str, _path: str) -> Answer:
        served["asked"] += 1
        if served["asked"] <= refusals:
            return Answer(403, b"<Error><Code>AccessDenied</Code></Error>", "application/xml")
        return Answer(body=jpeg(), content_type="image/jpeg")

    return media


@pytest.mark.parametrize(("refusals", "status"), [(1, "COMPLETED"), (99, "FAILED")])
def test_a_media_host_refusal_fetches_a_fresh_output_url_and_never_blames_the_key(
    refusals: int, status: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with scripted_server(_cdn_then_api(refusals), host="127.0.0.2") as (cdn, downloads):

        def api(method: str, path: str) -> Answer:
            if method == "POST":
                return accepted(url, "r1")
            return Answer(body={**DONE, "output": f"{cdn}/r1.jpeg"})

        with scripted_server(api) as (url, received):
            (result,), stats = run_engine(fast_config(url, prior_step_time=0.0), batch(1))

    assert result.status == status, result.error
    assert stats.submitted == 1
    if status == "COMPLETED":
        assert result.content is not None
        assert result.content.startswith(JPEG)
        assert kinds(received)["result"] == 2  # the refused URL was replaced by a fresh one
    else:
        assert result.retryable
        assert "HTTP 403" in (result.error or "")
        assert len(downloads) == 4  # the first URL and three fresh ones, then it gave up
    assert TEST_KEY not in caplog.text


# --- the result URL before completion --------------------------------------------------------


def test_a_422_from_the_result_url_before_completion_means_not_ready() -> None:
    """Only a FAILED status in the body is final there; the status URL says when it is done."""
    polls: Counter[str] = Counter()

    def script(method: str, path: str) -> Answer:
        if method == "POST":
            return accepted(url, "r1")
        if path.endswith("/status"):
            polls["status"] += 1
            return Answer(body={"request_id": "r1", "status": "COMPLETED", "metrics": {}})
        if not polls["status"]:
            return Answer(422, {"status": "PROCESSING", "error": "Request is not completed yet"})
        return Answer(body=DONE)

    with scripted_server(script) as (url, received):
        (result,), _stats = run_engine(fast_config(url, prior_step_time=0.0), batch(1))

    assert result.status == "COMPLETED", result.error
    assert kinds(received) == {"submit": 1, "result": 2, "status": 1}


def test_a_completed_status_whose_result_has_no_output_fails_after_a_few_tries() -> None:
    def script(method: str, path: str) -> Answer:
        if method == "POST":
            return accepted(url, "r1")
        return Answer(body={"request_id": "r1", "status": "COMPLETED", "output": None})

    with scripted_server(script) as (url, received):
        (result,), _stats = run_engine(
            fast_config(url, prior_step_time=0.0, deadline=5.0), batch(1)
        )

    assert result.status == "FAILED"
    assert result.retryable
    assert not result.timed_out
    assert "no output" in (result.error or "")
    assert kinds(received)["result"] == 3
    assert kinds(received)["status"] <= 3


# --- rate limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("hint", [("retry-after", "0"), ("x-rate-limit-reset-at-utc", "1000")])
def test_a_rate_limit_hint_of_no_wait_still_backs_off(
    hint: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """``Retry-After: 0``, or a reset time in the past (clock skew), is no reason to hammer."""
    caplog.set_level(logging.DEBUG, logger="flux_pipeline.segmind")
    limited: Counter[str] = Counter()

    def script(method: str, _path: str) -> Answer:
        if method == "POST" and limited["submit"] < 3:
            limited["submit"] += 1
            return Answer(429, {"error": "rate limited"}, headers=(hint,))
        if method == "POST":
            return accepted(url, "r1")
        return Answer(body=DONE)

    with scripted_server(script) as (url, _):
        (result,), stats = run_engine(fast_config(url, prior_step_time=0.0), batch(1))

    assert result.status == "COMPLETED", result.error
    assert stats.rate_limited == 3
    waits = [r.args[2] for r in caplog.records if "HTTP 429" in r.getMessage()]
    assert len(waits) == 3
    assert all(wait > 0 for wait in waits)


# --- cancellation ----------------------------------------------------------------------------


def test_a_submit_on_the_wire_when_the_run_is_cancelled_still_has_its_id_recorded() -> None:
    """A run ended by another error (or a cancelled Dagster run) while a submit awaits its
    answer: the job may be billed, so its id must reach the hook before the run ends."""
    recorded: list[tuple[str, str]] = []
    base: dict[str, str] = {}
    posted = threading.Event()

    def script(method: str, path: str) -> Answer:
        if method == "POST":
            posted.set()
            return replace(accepted(base["url"], "req-late"), delay=0.5)
        return Answer(body={"status": "PROCESSING"})

    async def cancel_mid_submit(url: str) -> None:
        config = fast_config(url, max_concurrency=1)
        async with SegmindEngine(config, on_submitted=lambda *ids: recorded.append(ids)) as engine:

            async def consume() -> None:
                async for _ in engine.generate(batch(1)):
                    pass

            task = asyncio.create_task(consume())
            assert await asyncio.to_thread(posted.wait, 10)  # the POST reached the service
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    with scripted_server(script) as (url, received):
        base["url"] = url
        asyncio.run(cancel_mid_submit(url))

    (request,) = batch(1)
    assert recorded == [(request.request_key, "req-late")]
    assert [line.split()[0] for line in received] == ["POST"]  # seen through, nothing more sent

"""The engine against the emulator over real HTTP: throughput shape, faults, limits, resume."""

from __future__ import annotations

import logging
import threading
from datetime import UTC
from typing import Any

import httpx
import pytest

from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.segmind import AuthenticationError, InsufficientCredits
from tests.support.loopback import TEST_KEY, fast_config
from tests.support.segmind_support import JPEG, PNG, batch, hangup_server, run_engine


def _all_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)


def test_batch_completes_at_full_concurrency_each_paid_once(emulator_factory: Any) -> None:
    emu = emulator_factory(workers=8, step_time=0.05)
    results: list[Any] = []
    in_flight: list[int] = []
    lock = threading.Lock()
    submitted = 0

    def hook(_key: str, _request_id: str) -> None:
        nonlocal submitted
        with lock:
            submitted += 1
            in_flight.append(submitted - len(results))

    requests = list(batch(32))
    results, stats = run_engine(
        fast_config(emu.url + "/v1"), iter(requests), on_submitted=hook, collected=results
    )

    assert sorted(r.request.key for r in results) == sorted(r.key for r in requests)
    assert max(in_flight) == 8  # the window was filled, and never overfilled
    assert all(r.status == "COMPLETED" and r.content_type == "image/jpeg" for r in results)
    assert all(r.content is not None and r.content.startswith(JPEG) for r in results)
    assert all(r.attempts >= 3 for r in results)  # submit, result, download at least
    for r in results:
        assert r.submitted_at is not None
        assert r.completed_at is not None
        assert r.submitted_at.tzinfo == UTC
        assert r.submitted_at <= r.completed_at
    jobs = emu.stats()["jobs"]["by_request_key"]
    assert jobs == {r.request_key: 1 for r in requests}
    assert stats.submitted == 32
    assert stats.completed == 32
    assert stats.requests["submit"] == 32
    # inference_time is the service's own figure, untouched
    sample = results[0]
    body = httpx.get(
        f"{emu.url}/v2/requests/{sample.request_id}", headers={"x-api-key": TEST_KEY}
    ).json()
    assert sample.inference_time == body["metrics"]["inference_time"]
    assert sample.queue_time == body["metrics"]["queue_time"]


def test_transient_faults_are_retried_and_every_image_paid_once(
    emulator_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emu = emulator_factory(workers=8, step_time=0.02, fault_rate=0.2, seed=3)
    requests = list(batch(30))

    results, stats = run_engine(fast_config(emu.url), iter(requests))

    assert [r.status for r in results] == ["COMPLETED"] * 30, [r.error for r in results]
    assert emu.stats()["jobs"]["by_request_key"] == {r.request_key: 1 for r in requests}
    assert stats.server_errors > 0
    assert stats.retries >= stats.server_errors
    assert TEST_KEY not in _all_logged(caplog)


def test_rate_limit_answers_are_honoured_and_shrink_the_window(
    emulator_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flux_pipeline.segmind")
    # 8 requests/s, a burst of 8: the first 8 submits take every token, so 429s are certain
    emu = emulator_factory(workers=8, step_time=0.02, rate_limit=8)

    results, stats = run_engine(fast_config(emu.url), batch(12))

    assert [r.status for r in results] == ["COMPLETED"] * 12
    assert stats.rate_limited > 0
    waits = [r.args[2] for r in caplog.records if "HTTP 429" in r.getMessage()]
    assert len(waits) == stats.rate_limited
    assert all(wait >= 1.0 for wait in waits)  # the emulator says Retry-After: 1 (or more)
    assert emu.stats()["jobs"]["by_request_key"] == {r.request.request_key: 1 for r in results}


def test_a_refused_key_aborts_at_once_with_advice_and_never_shows_the_key(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "SG_fedcba9876543210"
    results: list[Any] = []

    with pytest.raises(AuthenticationError) as raised:
        run_engine(
            fast_config(emulator.url, api_key=wrong, max_concurrency=4),
            batch(50),
            collected=results,
        )

    message = str(raised.value)
    assert "SEGMIND_API_KEY" in message
    assert "SEGMIND_BASE_URL" in message
    assert "401" in message
    assert wrong not in message
    assert wrong not in repr(raised.value)
    assert wrong not in _all_logged(caplog)
    assert results == []
    assert emulator.stats()["requests"]["submit"] <= 4  # no retries, no further submits


def test_out_of_credits_stops_submitting_and_finishes_in_flight_jobs(
    emulator_factory: Any,
) -> None:
    emu = emulator_factory(workers=4, step_time=0.05, credits=5)
    results: list[Any] = []

    with pytest.raises(InsufficientCredits, match="credits"):
        run_engine(fast_config(emu.url, max_concurrency=4), batch(20), collected=results)

    assert len(results) == 5
    assert all(r.status == "COMPLETED" for r in results)
    assert len(emu.stats()["jobs"]["by_request_key"]) == 5
    assert emu.stats()["requests"]["submit"] <= 5 + 4  # at most one refused submit per slot


def test_a_failing_submitted_hook_stops_submits_but_keeps_following_accepted_jobs(
    emulator_factory: Any,
) -> None:
    """A caller that cannot record ids (its storage is down) must not lose accepted jobs."""
    emu = emulator_factory(workers=4, step_time=0.05)
    recorded: list[str] = []

    def hook(request_key: str, request_id: str) -> None:
        if len(recorded) >= 3:
            raise OSError("ledger unwritable")
        recorded.append(request_id)

    results: list[Any] = []
    with pytest.raises(OSError, match="ledger unwritable"):
        run_engine(
            fast_config(emu.url, max_concurrency=4), batch(30), on_submitted=hook, collected=results
        )

    submitted = emu.stats()["requests"]["submit"]
    assert 4 <= submitted <= 3 + 4  # nothing new once a hook failed; at most one window more
    assert len(results) == submitted  # every accepted job, recorded or not, was yielded
    assert all(r.status == "COMPLETED" and r.content for r in results)


def test_failed_and_refused_requests_become_failed_results(emulator: Any) -> None:
    requests = [
        GenerationRequest(key="ok", prompt="a quiet harbour"),
        GenerationRequest(key="nsfw", prompt="something nsfw"),
        GenerationRequest(key="bad", prompt="a quiet harbour", aspect_ratio="7:3"),
    ]

    results, stats = run_engine(fast_config(emulator.url), requests)

    by_key = {r.request.key: r for r in results}
    assert by_key["ok"].status == "COMPLETED"
    nsfw = by_key["nsfw"]
    assert nsfw.status == "FAILED"
    assert "NSFW" in (nsfw.error or "")
    assert nsfw.request_id is not None
    assert not nsfw.retryable
    assert nsfw.content is None
    bad = by_key["bad"]
    assert bad.status == "FAILED"
    assert "aspect_ratio" in (bad.error or "")
    assert bad.request_id is None
    assert not bad.retryable
    assert stats.failed == 2
    assert stats.retries == 0


def _submit_then_crash(url: str, request: GenerationRequest) -> str:
    """A run that dies right after its submit was recorded: returns the recorded id."""
    recorded: dict[str, str] = {}

    def hook(key: str, request_id: str) -> None:
        recorded[key] = request_id
        raise RuntimeError("process died")

    with pytest.raises(RuntimeError, match="process died"):
        run_engine(fast_config(url, max_concurrency=1), [request], on_submitted=hook)
    return recorded[request.request_key]


def test_resume_attaches_to_recorded_request_ids_without_paying_again(emulator: Any) -> None:
    requests = list(batch(3))
    old_id = _submit_then_crash(emulator.url, requests[0])

    results, stats = run_engine(
        fast_config(emulator.url), requests, attach={requests[0].request_key: old_id}
    )

    by_key = {r.request.key: r for r in results}
    assert all(r.status == "COMPLETED" for r in results)
    assert by_key[requests[0].key].request_id == old_id
    assert emulator.stats()["jobs"]["by_request_key"] == {r.request_key: 1 for r in requests}
    assert stats.attached == 1
    assert stats.submitted == 2
    assert stats.expired == 0


def _expired(url: str, request_id: str) -> None:
    """Return once the emulator no longer keeps ``request_id``'s result."""
    with httpx.Client(base_url=url, headers={"x-api-key": TEST_KEY}) as http:
        while http.get(f"/v2/requests/{request_id}/status").status_code != 404:
            pass


def test_an_expired_request_id_is_recovered_from_the_account_record(
    emulator_factory: Any,
) -> None:
    emu = emulator_factory(workers=4, step_time=0.02, retention=0.5)
    request = GenerationRequest(key="late", prompt="a windmill")
    old_id = _submit_then_crash(emu.url, request)
    _expired(emu.url, old_id)

    (result,), stats = run_engine(
        fast_config(emu.url), [request], attach={request.request_key: old_id}
    )

    assert result.status == "COMPLETED"
    assert result.content
    assert result.request_id == old_id
    assert result.recovered_from == "history"
    assert emu.stats()["jobs"]["by_request_key"] == {request.request_key: 1}
    assert (stats.recovered, stats.expired, stats.submitted) == (1, 0, 0)
    assert stats.requests["history"] == 1


def test_an_expired_request_id_the_record_lacks_is_submitted_again_exactly_once(
    emulator_factory: Any,
) -> None:
    emu = emulator_factory(workers=4, step_time=0.02, retention=0.5, history_retention=0.3)
    request = GenerationRequest(key="late", prompt="a windmill")
    old_id = _submit_then_crash(emu.url, request)
    _expired(emu.url, old_id)

    (result,), stats = run_engine(
        fast_config(emu.url), [request], attach={request.request_key: old_id}
    )

    assert result.status == "COMPLETED"
    assert result.request_id != old_id
    assert result.recovered_from is None
    assert emu.stats()["jobs"]["by_request_key"] == {request.request_key: 2}
    assert stats.expired == 1
    assert stats.submitted == 1


def test_sync_mode_posts_once_per_image(emulator: Any) -> None:
    results, stats = run_engine(fast_config(emulator.url, mode="sync"), batch(6))

    assert all(r.status == "COMPLETED" and r.content_type == "image/jpeg" for r in results)
    assert all(r.inference_time is not None and r.request_id for r in results)
    assert all(r.attempts == 1 for r in results)
    requests = emulator.stats()["requests"]
    assert requests["sync"] == 6
    assert requests["submit"] == requests["status"] == 0
    assert stats.requests["sync"] == 6


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_base64_mode_decodes_inline_outputs(emulator: Any, mode: str) -> None:
    results, _ = run_engine(fast_config(emulator.url, base64=True, mode=mode), batch(3))

    assert all(r.status == "COMPLETED" and r.content_type == "image/jpeg" for r in results)
    assert all(r.content is not None and r.content.startswith(JPEG) for r in results)
    assert emulator.stats()["requests"]["output"] == 0  # nothing downloaded


@pytest.mark.parametrize(("mode", "base64"), [("async", False), ("sync", False), ("async", True)])
def test_png_outputs_stay_png(emulator_factory: Any, mode: str, base64: bool) -> None:
    emu = emulator_factory(workers=4, step_time=0.02, output_format="png")

    results, _ = run_engine(fast_config(emu.url, mode=mode, base64=base64), batch(2))

    assert all(r.content_type == "image/png" for r in results)
    assert all(r.content is not None and r.content.startswith(PNG) for r in results)


def test_a_lost_answer_is_not_posted_again_while_the_record_cannot_be_read() -> None:
    with hangup_server() as (url, received):
        (result,), stats = run_engine(fast_config(url, max_retries=1), batch(1))

    assert result.status == "FAILED"
    assert result.retryable
    assert "not re-POSTed" in (result.error or "")
    assert "record could not be read" in (result.error or "")
    posts = [line for line in received if line.startswith("POST")]
    assert posts == ["POST /v2/fast-flux-schnell HTTP/1.1"]
    assert any(line.startswith("GET /inference-request/request-history") for line in received)
    assert stats.ambiguous_submits == 1


def test_reposting_lost_submits_is_deprecated_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "flux_pipeline.segmind"):
        config = fast_config("http://127.0.0.1:9", repost_ambiguous_submits=True)

    assert "repost_ambiguous_submits is deprecated and ignored" in caplog.text
    assert "account's record" in caplog.text
    assert config.history_grace == 60.0


def test_a_job_past_its_deadline_fails_retryable_with_its_request_id(
    emulator_factory: Any,
) -> None:
    emu = emulator_factory(workers=1, step_time=0.5)

    (result,), _ = run_engine(fast_config(emu.url, deadline=0.4), batch(1))

    assert result.status == "FAILED"
    assert result.retryable
    assert result.timed_out
    assert result.request_id is not None
    assert result.request_id in (result.error or "")

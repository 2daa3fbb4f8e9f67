"""Refusals and failures over real HTTP: 400, 401, 404, 406, 422, 429 and injected 5xx."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from flux_pipeline.emulator.jobs import CONTENT_POLICY_ERROR
from flux_pipeline.emulator.settings import DEFAULT_PRICE
from tests.support.emulator_http import SUBMIT_PATH, SYNC_PATH, TEST_KEY, submit, wait_for_end


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 3}, "prompt"),
        ({"prompt": "x", "steps": 0}, "steps"),
        ({"prompt": "x", "steps": 9}, "steps"),
        ({"prompt": "x", "steps": "4"}, "steps"),
        ({"prompt": "x", "steps": True}, "steps"),
        ({"prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio"),
        ({"prompt": "x", "seed": 1.5}, "seed"),
        ({"prompt": "x", "seed": "7"}, "seed"),
        ({"prompt": "x", "base64": "yes"}, "base64"),
        ([1, 2], "body"),
    ],
)
@pytest.mark.parametrize("path", [SUBMIT_PATH, SYNC_PATH])
def test_bad_parameters_are_400_naming_the_field(
    client: httpx.Client, path: str, body: Any, field: str
) -> None:
    response = client.post(path, json=body)

    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{field}:")


def test_body_that_is_not_json_is_400(client: httpx.Client) -> None:
    response = client.post(SUBMIT_PATH, content=b"prompt=hello")

    assert response.status_code == 400
    assert response.json()["error"].startswith("body:")


def test_unknown_model_slug_is_404(client: httpx.Client) -> None:
    for path in ("/v2/flux-dev", "/v1/flux-dev"):
        response = client.post(path, json={"prompt": "x"})
        assert response.status_code == 404
        assert "flux-dev" in response.json()["error"]


@pytest.mark.parametrize("headers", [{}, {"x-api-key": ""}, {"x-api-key": "SG_ffffffffffffffff"}])
def test_missing_or_unknown_key_is_401_on_every_api_endpoint(
    emulator: Any, headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=emulator.url, headers=headers) as http:
        answers = [
            http.post(SUBMIT_PATH, json={"prompt": "x"}),
            http.post(SYNC_PATH, json={"prompt": "x"}),
            http.get("/v2/requests/some-id/status"),
            http.get("/v2/requests/some-id"),
        ]

    for answer in answers:
        assert answer.status_code == 401
        assert answer.json() == {"error": "Missing Authorization or x-api-key in header"}


def test_without_configured_keys_any_non_empty_key_is_accepted(
    emulator_factory: Callable[..., Any],
) -> None:
    emu = emulator_factory(api_keys=(), step_time=0.001)

    accepted = httpx.post(
        f"{emu.url}{SUBMIT_PATH}", json={"prompt": "x"}, headers={"x-api-key": "k"}
    )
    refused = httpx.post(f"{emu.url}{SUBMIT_PATH}", json={"prompt": "x"})

    assert (accepted.status_code, refused.status_code) == (200, 401)


@pytest.mark.parametrize("prompt", ["nsfw beach scene", "a Portrait, NSFW", "NsFw"])
def test_nsfw_prompt_ends_failed_with_a_content_policy_error(
    client: httpx.Client, prompt: str
) -> None:
    job = submit(client, prompt=prompt, steps=1)

    status = wait_for_end(client, job["status_url"])
    result = client.get(job["response_url"])

    assert status.status_code == 422
    assert status.json()["status"] == "FAILED"
    assert status.json()["error"] == CONTENT_POLICY_ERROR
    assert result.status_code == 422
    assert result.json()["status"] == "FAILED"
    assert result.json()["error"] == CONTENT_POLICY_ERROR
    assert result.json()["output"] is None
    assert client.get("/_emulator/stats").json()["jobs"]["failed"] == 1


def test_nsfw_must_be_a_whole_word(client: httpx.Client) -> None:
    job = submit(client, prompt="unsfwashed laundry", steps=1)

    assert wait_for_end(client, job["status_url"]).json()["status"] == "COMPLETED"


def test_credits_run_out_with_406_and_are_reported(emulator_factory: Callable[..., Any]) -> None:
    emu = emulator_factory(step_time=0.001, credits=2)
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        first = submit(http, steps=1)
        sync = http.post(SYNC_PATH, json={"prompt": "x", "steps": 1})
        refused = [http.post(path, json={"prompt": "x"}) for path in (SUBMIT_PATH, SYNC_PATH)]
        wait_for_end(http, first["status_url"])
        metrics = http.get(first["response_url"]).json()["metrics"]

    assert sync.headers["x-remaining-credits"] == "0.0"
    assert [answer.status_code for answer in refused] == [406, 406]
    assert refused[0].json() == {"error": "Insufficient credits"}
    assert metrics["cost"] == DEFAULT_PRICE
    assert metrics["remaining_credits"] in (0.0, 1.0)
    assert emu.stats()["jobs"]["completed"] == 2


def test_a_failed_sync_job_is_not_billed(emulator_factory: Callable[..., Any]) -> None:
    emu = emulator_factory(step_time=0.001, credits=1)
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        failed = http.post(SYNC_PATH, json={"prompt": "NSFW", "steps": 1})
        billed = http.post(SYNC_PATH, json={"prompt": "fine", "steps": 1})

    assert failed.status_code == 422
    assert failed.json() == {"error": CONTENT_POLICY_ERROR}
    assert billed.status_code == 200
    assert billed.headers["x-remaining-credits"] == "0.0"


def test_rate_limit_is_429_with_retry_after_and_reset_time(
    emulator_factory: Callable[..., Any],
) -> None:
    emu = emulator_factory(step_time=0.001, rate_limit=0.25, api_keys=(TEST_KEY, "SG_other"))
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        answers = [http.get("/v2/requests/x/status") for _ in range(2)]
        submit = http.post(SUBMIT_PATH, json={"prompt": "x"})
        other_key = http.get("/v2/requests/x/status", headers={"x-api-key": "SG_other"})

    assert [answer.status_code for answer in answers] == [404, 429]
    assert submit.status_code == 429  # one bucket for every API request of a key
    limited = answers[1]
    assert limited.json() == {"error": "Rate limit exceeded"}
    assert limited.headers["Retry-After"] == "4"
    reset_at = datetime.fromisoformat(limited.headers["x-rate-limit-reset-at-utc"])
    assert reset_at.tzinfo is not None
    assert 0 < (reset_at - datetime.now(UTC)).total_seconds() <= 4.0
    assert other_key.status_code == 404  # the bucket is per key
    assert emu.stats()["requests"]["status"] == 3
    assert emu.stats()["jobs"]["by_request_key"] == {}


def _fault_pattern(emu: Any, count: int) -> list[int]:
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        return [
            http.post(SUBMIT_PATH, json={"prompt": f"p{index % 5}", "steps": 1}).status_code
            for index in range(count)
        ]


def test_faults_are_5xx_and_reproducible_from_the_seed(
    emulator_factory: Callable[..., Any],
) -> None:
    first = _fault_pattern(emulator_factory(step_time=0.001, fault_rate=0.5, seed=11), 30)
    replay = _fault_pattern(emulator_factory(step_time=0.001, fault_rate=0.5, seed=11), 30)
    other = _fault_pattern(emulator_factory(step_time=0.001, fault_rate=0.5, seed=12), 30)

    assert first == replay
    assert first != other
    assert set(first) == {200, 500, 502, 504}


def test_faults_hit_every_endpoint_and_are_counted(emulator_factory: Callable[..., Any]) -> None:
    emu = emulator_factory(step_time=0.001, fault_rate=1.0)
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        answers = [
            http.post(SUBMIT_PATH, json={"prompt": "x"}),
            http.post(SYNC_PATH, json={"prompt": "x"}),
            http.get("/v2/requests/x/status"),
            http.get("/v2/requests/x"),
            http.get("/media/x.jpeg"),
            http.get("/inference-request/request-history"),
        ]
        health = http.get("/healthz")

    for answer in answers:
        assert answer.status_code in (500, 502, 504)
        assert "error" in answer.json()
    assert health.status_code == 200
    stats = emu.stats()
    assert stats["requests"] == {
        "submit": 1,
        "status": 1,
        "result": 1,
        "output": 1,
        "sync": 1,
        "history": 1,
    }
    assert stats["jobs"]["by_request_key"] == {}

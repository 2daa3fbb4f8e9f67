"""The async v2 protocol over real HTTP: submit, status, result, media, expiry."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from typing import Any

import httpx
from PIL import Image

from flux_pipeline.emulator import EmulatorSettings
from flux_pipeline.emulator.jobs import InferencePool, JobStore
from flux_pipeline.emulator.params import Params
from flux_pipeline.protocol import request_key
from tests.support.emulator_http import TEST_KEY, submit, wait_for_end


def test_submit_answers_queued_with_absolute_urls(client: httpx.Client) -> None:
    body = submit(client, prompt="a red fox", seed=7)

    request_id = body["request_id"]
    assert body["status"] == "QUEUED"
    assert body["status_url"] == f"{client.base_url}/v2/requests/{request_id}/status"
    assert body["poll_url"] == body["status_url"]
    assert body["response_url"] == f"{client.base_url}/v2/requests/{request_id}"


def test_urls_are_built_from_the_requests_own_host(client: httpx.Client) -> None:
    response = client.post(
        "/v2/fast-flux-schnell", json={"prompt": "x"}, headers={"host": "gateway.example:9000"}
    )

    assert response.json()["status_url"].startswith("http://gateway.example:9000/v2/requests/")


def test_completed_job_serves_metrics_and_a_media_url(client: httpx.Client) -> None:
    body = submit(client, prompt="a red fox", seed=7, steps=2, aspect_ratio="16:9")

    status = wait_for_end(client, body["status_url"])
    result = client.get(body["response_url"])

    assert status.status_code == 200
    assert status.json()["status"] == "COMPLETED"
    assert "output" not in status.json()
    final = result.json()
    assert result.status_code == 200
    assert final["status"] == "COMPLETED"
    assert final["error"] is None
    assert final["output"] == f"{client.base_url}/media/{body['request_id']}.jpeg"
    metrics = final["metrics"]
    assert set(metrics) == {
        "inference_time",
        "queue_time",
        "total_time",
        "cost",
        "remaining_credits",
    }
    assert metrics["inference_time"] >= 2 * 0.02 * 0.95
    assert metrics["total_time"] >= metrics["inference_time"]
    media = httpx.get(final["output"])  # a CDN URL: no key needed
    assert media.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(media.content)) as image:
        assert (image.format, image.size) == ("JPEG", (1344, 768))


def test_base64_output_is_the_image_itself(client: httpx.Client) -> None:
    url_job = submit(client, prompt="a red fox", seed=7)
    inline_job = submit(client, prompt="a red fox", seed=7, base64=True)
    for job in (url_job, inline_job):
        wait_for_end(client, job["status_url"])

    by_url = httpx.get(client.get(url_job["response_url"]).json()["output"]).content
    inline = client.get(inline_job["response_url"]).json()["output"]

    assert base64.b64decode(inline) == by_url


def test_states_go_queued_processing_completed_first_in_first_out(
    emulator_factory: Callable[..., Any],
) -> None:
    emu = emulator_factory(workers=1, step_time=0.05)
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        jobs = [submit(http, prompt=f"prompt {index}") for index in range(3)]
        second = http.get(jobs[1]["status_url"]).json()
        seen: set[str] = set()
        while "COMPLETED" not in seen:
            seen.add(http.get(jobs[0]["status_url"]).json()["status"])
            time.sleep(0.005)
        results = [
            http.get(wait_for_end(http, job["status_url"]).json()["response_url"]) for job in jobs
        ]

    assert second["status"] == "QUEUED"
    assert second["metrics"] == {}
    assert {"PROCESSING", "COMPLETED"} <= seen
    queue_times = [result.json()["metrics"]["queue_time"] for result in results]
    assert queue_times == sorted(queue_times)
    assert queue_times[2] > queue_times[0]


def test_result_before_completion_answers_like_status(
    emulator_factory: Callable[..., Any],
) -> None:
    emu = emulator_factory(workers=1, step_time=0.2)
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        job = submit(http, steps=1)
        early = http.get(job["response_url"])
        wait_for_end(http, job["status_url"])

    assert early.status_code == 200
    assert early.json()["status"] in ("QUEUED", "PROCESSING")
    assert "output" not in early.json()
    assert early.json()["status_url"] == job["status_url"]


def test_unknown_request_is_404(client: httpx.Client) -> None:
    for path in ("/v2/requests/nope/status", "/v2/requests/nope"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json() == {"error": "Request nope not found"}
    assert client.get("/media/nope.jpeg").status_code == 404


def test_results_expire_after_retention(emulator_factory: Callable[..., Any]) -> None:
    """Status and result go; the media URL goes only with the account's record (which keeps
    it downloadable after the result expired: see test_emulator_record.py)."""
    retention = 1.0
    emu = emulator_factory(step_time=0.001, retention=retention, history_retention=retention / 2)
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        submitted = time.monotonic()
        job = submit(http, steps=1)
        wait_for_end(http, job["status_url"])
        media_url = http.get(job["response_url"]).json()["output"]
        time.sleep(max(0.0, submitted + retention + 0.1 - time.monotonic()))
        answers = [http.get(url) for url in (job["status_url"], job["response_url"], media_url)]

    assert [answer.status_code for answer in answers] == [404, 404, 404]
    assert answers[0].json() == {"error": f"Request {job['request_id']} not found"}
    assert emu.stats()["jobs"]["expired"] == 1


def test_png_output_format(emulator_factory: Callable[..., Any]) -> None:
    emu = emulator_factory(step_time=0.001, output_format="png")
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        job = submit(http, steps=1, aspect_ratio="9:21")
        wait_for_end(http, job["status_url"])
        output = http.get(job["response_url"]).json()["output"]
        media = http.get(output)

    assert output.endswith(".png")
    assert media.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(media.content)) as image:
        assert (image.format, image.size) == ("PNG", (640, 1536))


def test_stats_count_every_request_and_accepted_submits_per_key(
    client: httpx.Client, emulator: Any
) -> None:
    job = submit(client, prompt="a red fox", seed=7, steps=2)
    again = submit(client, prompt="a red fox", seed=7, steps=2)
    wait_for_end(client, job["status_url"])
    wait_for_end(client, again["status_url"])
    output = client.get(job["response_url"]).json()["output"]
    client.get(output)
    client.post("/v1/fast-flux-schnell", json={"prompt": "sync"})
    client.post("/v2/fast-flux-schnell", json={"steps": 2})  # 400: counted, not accepted

    stats = emulator.stats()

    requests = stats["requests"]
    assert requests["submit"] == 3
    assert requests["status"] >= 1
    assert (requests["result"], requests["output"], requests["sync"]) == (1, 1, 1)
    jobs = stats["jobs"]
    key = request_key("fast-flux-schnell", "a red fox", 7, 2, "1:1")
    sync_key = request_key("fast-flux-schnell", "sync", 1184522, 4, "1:1")
    assert jobs["by_request_key"] == {key: 2, sync_key: 1}
    assert (jobs["queued"], jobs["processing"], jobs["completed"], jobs["failed"]) == (0, 0, 3, 0)
    assert stats == client.get("/_emulator/stats").json()


def test_healthz(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_slot_time_is_steps_times_step_time_with_small_seeded_jitter() -> None:
    store = JobStore(retention=60)

    def planned(seed: int, prompt: str) -> float:
        pool = InferencePool(EmulatorSettings(step_time=0.3, seed=seed), store, lambda job: None)
        return pool.planned_time(Params(prompt, seed=1, steps=4, aspect_ratio="1:1", base64=False))

    assert planned(0, "a") == planned(0, "a")
    assert planned(0, "a") != planned(1, "a")
    assert planned(0, "a") != planned(0, "b")
    for seed in range(20):
        assert 1.2 * 0.95 <= planned(seed, "a") <= 1.2 * 1.05

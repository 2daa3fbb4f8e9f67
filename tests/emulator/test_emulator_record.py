"""The account's record (``/inference-request/request-history``): what Segmind's SDK 1.3
``generations.history()`` / ``get()`` read, unchanged, and the knobs that lose submit answers."""

from __future__ import annotations

import importlib
import io
from typing import Any

import httpx
import pytest
from PIL import Image
from segmind import SegmindClient
from segmind.exceptions import SegmindError

from flux_pipeline.emulator.jobs import CONTENT_POLICY_ERROR
from flux_pipeline.emulator.settings import DEFAULT_PRICE
from tests.support.emulator_http import SUBMIT_PATH, SYNC_PATH, TEST_KEY, submit, wait_for_end

OTHER_KEY = "SG_fedcba9876543210"
HISTORY = "/inference-request/request-history"


@pytest.fixture
def record_emulator(emulator_factory: Any) -> Any:
    """Two accounts, results kept a moment only (the record outlives them)."""
    return emulator_factory(api_keys=(TEST_KEY, OTHER_KEY), workers=4, step_time=0.01)


@pytest.fixture
def sdk(record_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> SegmindClient:
    """The SDK, unchanged, with its record URL pointed at the emulator."""
    generations = importlib.import_module("segmind.generations")
    monkeypatch.setattr(generations, "REQUEST_HISTORY_URL", f"{record_emulator.url}{HISTORY}")
    return SegmindClient(api_key=TEST_KEY, base_url=f"{record_emulator.url}/v1")


def test_sdk_history_and_get_read_every_request_with_cost_inputs_and_outcome(
    sdk: SegmindClient, record_emulator: Any
) -> None:
    with httpx.Client(base_url=record_emulator.url, headers={"x-api-key": TEST_KEY}) as http:
        done = submit(http, prompt="a red fox", seed=7, steps=2, aspect_ratio="16:9")
        failed = submit(http, prompt="nsfw portrait", seed=1, steps=1)
        for job in (done, failed):
            wait_for_end(http, job["status_url"])
        sync = http.post(SYNC_PATH, json={"prompt": "a blue heron", "seed": 3})
        assert sync.status_code == 200
    with httpx.Client(base_url=record_emulator.url, headers={"x-api-key": OTHER_KEY}) as other:
        someone_else = submit(other, prompt="another account's fox")

    page = sdk.generations.history(per_page=100, model_name="flux-schnell")

    rows = {row["request_id"]: row for row in page["data"]}
    assert page["total"] == 3  # the other account's request is not ours
    assert someone_else["request_id"] not in rows
    assert rows[done["request_id"]]["request_body"] == {
        "prompt": "a red fox",
        "seed": 7,
        "steps": 2,
        "aspect_ratio": "16:9",
    }
    assert rows[done["request_id"]]["model_status"] == "COMPLETED"
    assert rows[done["request_id"]]["credits_deduction"] == DEFAULT_PRICE
    assert rows[failed["request_id"]]["model_status"] == "FAILED"
    assert rows[failed["request_id"]]["error"] == CONTENT_POLICY_ERROR
    assert rows[failed["request_id"]]["generation_url"] is None
    sync_row = rows[sync.headers["x-request-id"]]
    assert sync_row["model_status"] == "COMPLETED"
    assert sync_row["model_name"] == "fast-flux-schnell"
    assert sync_row["created_at"].endswith("Z")
    assert sync_row["latency_ms"] >= 0

    row = sdk.generations.get(done["request_id"])
    assert row == rows[done["request_id"]]
    with pytest.raises(SegmindError) as not_ours:
        sdk.generations.get(someone_else["request_id"])
    assert not_ours.value.status == 404
    only_failed = sdk.generations.history(status="FAILED")
    assert [row["request_id"] for row in only_failed["data"]] == [failed["request_id"]]
    assert sdk.generations.history(model_name="sdxl")["data"] == []


def test_history_pages_and_refuses_what_the_sdk_documents_as_out_of_bounds(
    record_emulator: Any,
) -> None:
    with httpx.Client(base_url=record_emulator.url, headers={"x-api-key": TEST_KEY}) as http:
        ids = [submit(http, prompt=f"prompt {n}")["request_id"] for n in range(5)]
        first = http.get(HISTORY, params={"per_page": 2, "sort_order": "asc"}).json()
        third = http.get(HISTORY, params={"per_page": 2, "page": 3, "sort_order": "asc"}).json()
        newest = http.get(HISTORY, params={"per_page": 1}).json()
        too_many = http.get(HISTORY, params={"per_page": 101})
        too_long = http.get(HISTORY, params={"from_date": "2026-01-01", "to_date": "2026-02-01"})
        no_key = httpx.get(f"{record_emulator.url}{HISTORY}")

    assert [row["request_id"] for row in first["data"]] == ids[:2]
    assert [row["request_id"] for row in third["data"]] == ids[4:]
    assert (first["total"], first["total_pages"]) == (5, 3)
    assert [row["request_id"] for row in newest["data"]] == ids[-1:]
    assert too_many.status_code == 400
    assert "per_page" in too_many.json()["error"]
    assert too_long.status_code == 400
    assert "31 days" in too_long.json()["error"]
    assert no_key.status_code == 401


def test_generation_url_stays_downloadable_after_the_result_expired(
    emulator_factory: Any,
) -> None:
    emulator = emulator_factory(workers=2, step_time=0.01, retention=0.5)
    with httpx.Client(base_url=emulator.url, headers={"x-api-key": TEST_KEY}) as http:
        job = submit(http, prompt="a lighthouse", seed=11, aspect_ratio="2:3")
        wait_for_end(http, job["status_url"])
        result = http.get(job["response_url"]).json()
        original = http.get(result["output"]).content
        while http.get(job["status_url"]).status_code != 404:  # the result expires
            pass
        row = http.get(f"{HISTORY}/{job['request_id']}").json()
        again = http.get(row["generation_url"])

    assert row["model_status"] == "COMPLETED"
    assert row["generation_url"] == result["output"]
    assert again.status_code == 200
    assert again.content == original
    with Image.open(io.BytesIO(again.content)) as image:
        assert image.size == (832, 1216)


def test_history_retention_forgets_old_requests(emulator_factory: Any) -> None:
    emulator = emulator_factory(history_retention=0.3)
    with httpx.Client(base_url=emulator.url, headers={"x-api-key": TEST_KEY}) as http:
        job = submit(http, prompt="soon forgotten")
        assert http.get(f"{HISTORY}/{job['request_id']}").status_code == 200
        while http.get(f"{HISTORY}/{job['request_id']}").status_code != 404:
            pass
        assert http.get(HISTORY).json()["total"] == 0


def test_a_dropped_answer_leaves_an_accepted_recorded_job(emulator_factory: Any) -> None:
    emulator = emulator_factory(drop_submit_answers=1.0, workers=2, step_time=0.01)
    with httpx.Client(base_url=emulator.url, headers={"x-api-key": TEST_KEY}) as http:
        for path in (SUBMIT_PATH, SYNC_PATH):
            with pytest.raises(httpx.ReadTimeout):
                http.post(path, json={"prompt": f"lost via {path}"}, timeout=0.3)
        rows = http.get(HISTORY).json()["data"]

    stats = emulator.stats()
    assert stats["lost_answers"]["dropped"] == 2
    assert sorted(row["request_body"]["prompt"] for row in rows) == [
        f"lost via {SYNC_PATH}",
        f"lost via {SUBMIT_PATH}",
    ]
    assert sum(stats["jobs"]["by_request_key"].values()) == 2


def test_accept_then_502_runs_and_bills_the_job(emulator_factory: Any) -> None:
    emulator = emulator_factory(accept_then_502=1.0, workers=2, step_time=0.01)
    with httpx.Client(base_url=emulator.url, headers={"x-api-key": TEST_KEY}) as http:
        answer = http.post(SUBMIT_PATH, json={"prompt": "answered 502"})
        (row,) = http.get(HISTORY).json()["data"]
        while row["model_status"] == "PENDING":
            row = http.get(f"{HISTORY}/{row['request_id']}").json()

    assert answer.status_code == 502
    assert row["model_status"] == "COMPLETED"
    assert row["credits_deduction"] == DEFAULT_PRICE
    assert emulator.stats()["lost_answers"]["bad_gateway"] == 1

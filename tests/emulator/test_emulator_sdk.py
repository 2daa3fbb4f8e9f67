"""Segmind's own Python SDK (segmind==1.3.0) works unchanged against the emulator."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image
from segmind import SegmindClient
from segmind.exceptions import SegmindError
from segmind.v2 import InferenceFailed

from flux_pipeline.emulator.jobs import CONTENT_POLICY_ERROR
from flux_pipeline.emulator.settings import DEFAULT_PRICE
from tests.support.emulator_http import TEST_KEY


@pytest.fixture
def sdk(emulator: Any) -> SegmindClient:
    return SegmindClient(api_key=TEST_KEY, base_url=f"{emulator.url}/v1")


def test_run_submits_polls_and_returns_the_final_body(sdk: SegmindClient, emulator: Any) -> None:
    body = sdk.run("fast-flux-schnell", prompt="a red fox", seed=5, steps=1)

    assert body["status"] == "COMPLETED"
    assert body["output"].startswith(f"{emulator.url}/media/")
    assert body["metrics"]["cost"] == DEFAULT_PRICE


def test_submit_async_wait_returns_the_result(sdk: SegmindClient) -> None:
    job = sdk.submit_async("fast-flux-schnell", prompt="a red fox", base64=True)

    body = job.wait(timeout=30, interval=0.02)

    assert body["status"] == "COMPLETED"
    assert job.status()["status"] == "COMPLETED"
    assert body["output"]  # base64 image


def test_run_sync_returns_the_image_bytes(sdk: SegmindClient) -> None:
    response = sdk.run_sync("fast-flux-schnell", prompt="a red fox", aspect_ratio="16:9")

    assert response.headers["x-request-id"]
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.size == (1344, 768)


def test_nsfw_prompt_raises_inference_failed(sdk: SegmindClient) -> None:
    job = sdk.submit_async("fast-flux-schnell", prompt="NSFW portrait", steps=1)

    with pytest.raises(InferenceFailed) as failure:
        job.wait(timeout=30, interval=0.02)

    assert failure.value.detail == CONTENT_POLICY_ERROR
    assert job.result()["status"] == "FAILED"


def test_sdk_errors_carry_status_and_message(emulator: Any) -> None:
    sdk = SegmindClient(api_key="SG_ffffffffffffffff", base_url=f"{emulator.url}/v1")

    with pytest.raises(SegmindError) as failure:
        sdk.run_sync("fast-flux-schnell", prompt="x")

    assert failure.value.status == 401
    assert failure.value.detail == "Missing Authorization or x-api-key in header"

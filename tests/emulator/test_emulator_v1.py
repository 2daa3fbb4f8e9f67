"""The blocking v1 endpoint over real HTTP: image bytes, headers, base64 JSON."""

from __future__ import annotations

import base64
import io

import httpx
from PIL import Image

from flux_pipeline.emulator.settings import DEFAULT_PRICE
from tests.support.emulator_http import SYNC_PATH


def test_sync_answers_the_image_with_billing_headers(client: httpx.Client) -> None:
    response = client.post(SYNC_PATH, json={"prompt": "a red fox", "seed": 42, "steps": 3})

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-seed-value"] == "42"
    assert response.headers["x-cost"] == str(DEFAULT_PRICE)
    assert float(response.headers["x-remaining-credits"]) >= 0
    assert float(response.headers["x-generation-time"]) >= 3 * 0.02 * 0.95
    request_id = response.headers["x-request-id"]
    assert client.get(f"/v2/requests/{request_id}/status").json()["status"] == "COMPLETED"
    with Image.open(io.BytesIO(response.content)) as image:
        assert (image.format, image.size) == ("JPEG", (1024, 1024))


def test_sync_base64_answers_json_with_the_same_image(client: httpx.Client) -> None:
    params = {"prompt": "a red fox", "seed": 42, "aspect_ratio": "2:3"}
    raw = client.post(SYNC_PATH, json=params)
    encoded = client.post(SYNC_PATH, json={**params, "base64": True})

    assert encoded.headers["content-type"] == "application/json"
    assert base64.b64decode(encoded.json()["image"]) == raw.content
    assert encoded.headers["x-seed-value"] == "42"

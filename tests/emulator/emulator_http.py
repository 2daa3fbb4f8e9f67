"""HTTP helpers for the emulator suite: submit a job, poll it to its end (bounded)."""

from __future__ import annotations

import time
from typing import Any

import httpx

TEST_KEY = "SG_0123456789abcdef"
SUBMIT_PATH = "/v2/fast-flux-schnell"
SYNC_PATH = "/v1/fast-flux-schnell"
POLL_LIMIT = 20.0


def wait_for_end(http: httpx.Client, status_url: str) -> httpx.Response:
    """Poll ``status_url`` until the job is COMPLETED or FAILED; returns the last answer."""
    deadline = time.monotonic() + POLL_LIMIT
    while time.monotonic() < deadline:
        response = http.get(status_url)
        if response.json().get("status") in ("COMPLETED", "FAILED"):
            return response
        time.sleep(0.01)
    raise AssertionError(f"{status_url} did not finish within {POLL_LIMIT}s")


def submit(http: httpx.Client, **params: Any) -> dict[str, Any]:
    """POST a v2 submit, assert it was accepted, return its body."""
    params.setdefault("prompt", "a lighthouse on a cliff")
    response = http.post(SUBMIT_PATH, json=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body

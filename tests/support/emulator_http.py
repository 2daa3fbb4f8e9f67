"""HTTP helpers for the emulator suite: submit a job, poll it to its end (bounded), and run
``flux-pipeline emulator`` as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.loopback import free_port

TEST_KEY = "SG_0123456789abcdef"
SUBMIT_PATH = "/v2/fast-flux-schnell"
SYNC_PATH = "/v1/fast-flux-schnell"
POLL_LIMIT = 120.0


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


@contextmanager
def emulator_process(log: Path, *flags: str) -> Iterator[str]:
    """``flux-pipeline emulator --port FREE *flags`` writing to ``log``; yields its base URL once
    ``/healthz`` answers, and terminates it on exit."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("flux-pipeline")), "emulator"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--port", str(port), *flags], stdout=sink, stderr=subprocess.STDOUT
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{base}/healthz")
                    break
                except httpx.TransportError:
                    assert process.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, "the emulator did not start"
                    time.sleep(0.1)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=10)

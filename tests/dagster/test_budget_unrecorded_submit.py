"""A budget spent on a submit the engine could not record (a 200 without ``request_id``):
the run still fails with the budget's message, counting that submit as spent."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from flux_pipeline.resources import ObjectStoreResource, SegmindResource
from tests.support.dagster_support import PARTITION, Runner, failure_message, key_from_env
from tests.support.loopback import TEST_KEY

# The emulator named as the service (SEGMIND_BASE_URL, SEGMIND_API_KEY), as for every cost test.
pytestmark = pytest.mark.usefixtures("service_env")

PROMPTS = 4


class _NoRequestId(BaseHTTPRequestHandler):
    """Accepts every submit (200) without saying its request id."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.posts += 1  # type: ignore[attr-defined]
        body = json.dumps({"status": "QUEUED"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test counts the POSTs instead."""


@pytest.fixture
def no_request_id() -> Iterator[tuple[str, ThreadingHTTPServer]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoRequestId)
    server.daemon_threads = True
    server.posts = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()


def test_a_budget_spent_on_an_unrecorded_submit_ends_with_its_message(
    no_request_id: tuple[str, ThreadingHTTPServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prompts = tmp_path / "prompts.csv"
    rows = [f"p{n},a harbour number {n},,1,1:1" for n in range(PROMPTS)]
    prompts.write_text("\n".join(["prompt_id,prompt,seed,steps,aspect_ratio", *rows, ""]))
    monkeypatch.setenv("FLUX_PROMPTS", str(prompts))
    url, server = no_request_id
    resources = {
        "segmind": SegmindResource(
            api_key=key_from_env(TEST_KEY), base_url=url, mode="async", max_new_images=1
        ),
        "storage": ObjectStoreResource(root=str(tmp_path / "data")),
    }
    with dg.instance_for_test() as instance:
        runner = Runner(resources, instance)
        assert runner.prompt_table().success
        result = runner.partition(PARTITION)

    assert not result.success
    assert server.posts == 1  # type: ignore[attr-defined]
    assert (
        f"budget max_new_images=1 reached: 1 new images, {PROMPTS - 1} left; "
        "raise the budget and re-run to continue"
    ) in failure_message(result)

"""Image bodies are whole images before they count: oversized, truncated and HTML bodies are
asked again while the service keeps the result, then fail; never a COMPLETED result."""

from __future__ import annotations

import io
import json
import logging
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from PIL import Image

from flux_pipeline.segmind import GenerationResult
from tests.support.loopback import fast_config
from tests.support.segmind_support import Answer, accepted, batch, jpeg, run_engine, scripted_server


def _decodes(result: GenerationResult) -> bool:
    assert result.content is not None
    with Image.open(io.BytesIO(result.content)) as image:
        image.load()
    return True


@pytest.mark.parametrize("bad", ["truncated", "html", "oversized"])
@pytest.mark.parametrize("base64", [False, True])
def test_bad_bodies_are_asked_again_then_fail_never_completed(
    emulator_factory: Any, bad: str, base64: bool
) -> None:
    emu = emulator_factory(
        workers=4, step_time=0.01, bad_media=bad, output_format="png", oversized_bytes=2 << 20
    )
    config = fast_config(emu.url, mode="async", base64=base64, max_image_bytes=1 << 20)

    results, stats = run_engine(config, batch(3))

    assert [r.status for r in results] == ["FAILED"] * 3
    assert all(r.retryable for r in results)  # a later run re-attaches: nothing paid twice
    assert all(
        "not stored (the result was asked again 3 times)" in (r.error or "") for r in results
    )
    served = emu.stats()["requests"]
    assert served["submit"] == 3
    assert served["output" if not base64 else "result"] >= 4 * 3  # first fetch + 3 more each
    assert stats.bad_media == 4 * 3


def test_a_share_of_bad_bodies_costs_refetches_and_every_completed_image_decodes(
    emulator_factory: Any,
) -> None:
    emu = emulator_factory(
        workers=8, step_time=0.01, bad_media="truncated", bad_media_rate=0.4, output_format="png"
    )

    results, stats = run_engine(fast_config(emu.url, mode="async"), batch(24))

    completed = [r for r in results if r.status == "COMPLETED"]
    assert len(completed) >= 20  # 4 bad draws in a row are rare (seeded)
    assert all(_decodes(r) for r in completed)
    assert all(r.content_type == "image/png" for r in completed)
    assert stats.bad_media > 0
    assert emu.stats()["jobs"]["by_request_key"] == {r.request.request_key: 1 for r in results}


@pytest.mark.parametrize("bad", ["truncated", "html"])
def test_a_bad_v1_body_fails_the_image_not_the_run(emulator_factory: Any, bad: str) -> None:
    emu = emulator_factory(workers=4, step_time=0.01, bad_media=bad, output_format="png")

    results, _stats = run_engine(fast_config(emu.url, mode="sync"), batch(2))

    assert [r.status for r in results] == ["FAILED"] * 2
    assert all("sync: not" in (r.error or "") and r.retryable for r in results)


@contextmanager
def _declares_a_huge_body() -> Iterator[str]:
    """A media host that declares 400 MB and sends a PNG header: refused without reading."""

    class Huge(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(65536)
            head = b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 419430400\r\n"
            self.request.sendall(head + b"\r\n\x89PNG\r\n\x1a\n")
            self.request.recv(1)  # hold the connection until the client gives up on it

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Huge)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    with _declares_a_huge_body() as cdn:

        def script(method: str, path: str) -> Answer:
            if method == "POST":
                return accepted(api, "r1")
            return Answer(body={"status": "COMPLETED", "output": f"{cdn}/r1.png"})

        with scripted_server(script) as (api, received):
            (result,), stats = run_engine(fast_config(api, prior_step_time=0.0), batch(1))

    assert result.status == "FAILED"
    assert "419430400 bytes declared" in (result.error or "")
    assert stats.oversized_answers == 4
    assert received.count("GET /v2/requests/r1") == 4


def test_a_size_far_from_the_aspect_ratio_is_kept_warned_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    small = jpeg((512, 512))

    def script(method: str, path: str) -> Answer:
        if method == "POST":
            return accepted(api, "r1")
        if path.endswith(".jpeg"):
            return Answer(body=small, content_type="image/jpeg")
        return Answer(body={"status": "COMPLETED", "output": f"{api}/media/r1.jpeg"})

    caplog.set_level(logging.WARNING, logger="flux_pipeline.segmind")
    with scripted_server(script) as (api, _received):
        results, stats = run_engine(fast_config(api, prior_step_time=0.0), batch(3))

    assert [r.status for r in results] == ["COMPLETED"] * 3
    assert stats.unexpected_sizes == 3
    warnings = [r for r in caplog.records if "512x512 for aspect ratio 1:1" in r.getMessage()]
    assert len(warnings) == 1


_CHILD = """
import asyncio, json, socket, subprocess, sys, time
import httpx
from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.segmind import EngineConfig, SegmindEngine

def peak_rss_kb():
    # VmHWM: this address space's own peak. getrusage's ru_maxrss would not do: Linux keeps
    # it across fork and exec, so it reports the (large) pytest parent's RSS at the fork.
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
emulator = subprocess.Popen(
    [sys.argv[1], "emulator", "--port", str(port), "--workers", "8", "--step-time", "0.01",
     "--bad-media", "oversized", "--oversized-bytes", str(400 * 1024 * 1024)],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
base = f"http://127.0.0.1:{port}"
try:
    for _ in range(300):
        try:
            httpx.get(base + "/healthz")
            break
        except httpx.TransportError:
            time.sleep(0.1)

    async def main():
        config = EngineConfig(api_key="SG_0123456789abcdef", base_url=base, max_concurrency=8,
                              prior_step_time=0.01, mode="async")
        requests = [GenerationRequest(key=f"p{i}", prompt=f"p {i}", seed=i) for i in range(8)]
        async with SegmindEngine(config) as engine:
            results = [r async for r in engine.generate(requests)]
        served = httpx.get(base + "/_emulator/stats").json()["requests"]
        return results, served

    results, served = asyncio.run(main())
    print(json.dumps({
        "statuses": sorted(r.status for r in results),
        "downloads": served["output"],
        "peak_rss_mb": peak_rss_kb() / 1024,
    }))
finally:
    emulator.terminate()
    emulator.wait()
"""


@pytest.mark.slow
def test_client_memory_stays_bounded_with_400_mb_bodies_in_flight() -> None:
    """The issue's case: 400 MB bodies (a PNG header, then padding, no Content-Length), here
    8 in flight, each fetched 4 times; the client's own peak RSS (VmHWM), measured in a
    child process that runs nothing else (the emulator is a process of its own)."""
    cli = str(__import__("pathlib").Path(sys.executable).with_name("flux-pipeline"))
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, cli],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])

    assert report["statuses"] == ["FAILED"] * 8
    assert report["downloads"] == 8 * 4
    assert report["peak_rss_mb"] < 600, report

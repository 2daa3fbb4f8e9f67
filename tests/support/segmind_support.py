"""Helpers of the Segmind engine suites: drive the engine over a batch, talk to test peers."""

from __future__ import annotations

import asyncio
import io
import json
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.segmind import EngineConfig, EngineStats, GenerationResult, SegmindEngine

JPEG, PNG = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


def jpeg(size: tuple[int, int] = (1024, 1024)) -> bytes:
    """A real JPEG of ``size`` (a whole image, as the engine now checks)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(buffer, format="JPEG")
    return buffer.getvalue()


def batch(n: int, *, prefix: str = "p") -> Iterator[GenerationRequest]:
    """``n`` distinct requests, generated lazily."""
    for i in range(n):
        yield GenerationRequest(key=f"{prefix}{i}", prompt=f"a lighthouse at dusk #{i}", seed=i)


def run_engine(
    config: EngineConfig,
    requests: Iterable[GenerationRequest],
    *,
    attach: Mapping[str, str] | None = None,
    on_submitted: Callable[[str, str], None] | None = None,
    collected: list[GenerationResult] | None = None,
) -> tuple[list[GenerationResult], EngineStats]:
    """Drive one engine to the end; results also land in ``collected`` as they arrive."""
    results = collected if collected is not None else []

    async def drive() -> EngineStats:
        async with SegmindEngine(config, on_submitted=on_submitted) as engine:
            async for result in engine.generate(requests, attach=attach):
                results.append(result)
            return engine.stats

    return results, asyncio.run(drive())


class _Hangup(socketserver.BaseRequestHandler):
    """Reads one whole HTTP request, then closes the connection without answering."""

    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(body) < length:
            body += self.request.recv(65536)
        self.server.received.append(head.split(b"\r\n")[0].decode())  # type: ignore[attr-defined]


@contextmanager
def hangup_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback peer that takes each request and drops the connection: lost answers."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Hangup)
    server.daemon_threads = True
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}", server.received  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Answer:
    """What a :func:`scripted_server` sends back: a JSON body (or raw bytes), maybe late."""

    status: int = 200
    body: Any = None
    content_type: str = "application/json"
    delay: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()


Script = Callable[[str, str], Answer]


class _Scripted(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real service

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        server: Any = self.server
        server.received.append(f"{self.command} {self.path}")
        answer: Answer = server.script(self.command, self.path)
        time.sleep(answer.delay)
        body = answer.body
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(answer.status)
        self.send_header("content-type", answer.content_type)
        self.send_header("content-length", str(len(payload)))
        for name, value in answer.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test asserts on ``received`` instead."""


@contextmanager
def scripted_server(script: Script, *, host: str = "127.0.0.1") -> Iterator[tuple[str, list[str]]]:
    """A loopback peer answering each request with ``script(method, path)``: answers the
    emulator never gives (undocumented ones of the real service, a CDN's refusals)."""
    server = ThreadingHTTPServer((host, 0), _Scripted)
    server.daemon_threads = True
    server.script = script  # type: ignore[attr-defined]
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}", server.received  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def accepted(base: str, request_id: str) -> Answer:
    """The answer of an accepted v2 submit, its URLs under ``base``."""
    url = f"{base}/v2/requests/{request_id}"
    body = {"request_id": request_id, "status": "QUEUED", "status_url": f"{url}/status"}
    return Answer(body={**body, "response_url": url})


@dataclass
class Recorded:
    """What a :func:`recording_server` saw: each request's line and headers (lower-case)."""

    requests: list[tuple[str, dict[str, str]]]

    def keys_seen(self) -> list[str]:
        """The ``x-api-key`` values it was sent (empty when the key never reached it)."""
        return [headers["x-api-key"] for _, headers in self.requests if "x-api-key" in headers]


class _Recording(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        server: Any = self.server
        headers = {name.lower(): value for name, value in self.headers.items()}
        server.recorded.requests.append((f"{self.command} {self.path}", headers))
        status, content_type, payload = server.answer
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test asserts on what was recorded."""


@contextmanager
def recording_server(
    status: int = 200, content_type: str = "image/jpeg", payload: bytes = b""
) -> Iterator[tuple[str, Recorded]]:
    """A loopback peer that records every request's headers and answers them all alike: a
    media host, or a foreign origin the key must never reach."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recording)
    server.daemon_threads = True
    server.recorded = Recorded([])  # type: ignore[attr-defined]
    server.answer = (status, content_type, payload)  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.recorded  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()

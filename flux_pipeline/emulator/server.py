"""Run the emulator: in-process on an ephemeral loopback port, or in the foreground (CLI)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from flux_pipeline.emulator.app import create_app
from flux_pipeline.emulator.settings import EmulatorSettings

STARTUP_TIMEOUT = 30.0


@dataclass(frozen=True)
class RunningEmulator:
    """A started emulator: its base URL and a view of its counters."""

    url: str
    _server: uvicorn.Server | None = field(default=None, repr=False, compare=False)

    def connections(self) -> int:
        """Connections the server holds open plus requests it is still answering: 0 once every
        client has gone and every byte they sent has been read and answered (or dropped)."""
        if self._server is None:
            raise RuntimeError("connections() needs the emulator started by run_emulator")
        state = self._server.server_state
        return len(state.connections) + len(state.tasks)

    def stats(self) -> dict[str, Any]:
        """The same JSON as ``GET /_emulator/stats``."""
        response = httpx.get(f"{self.url}/_emulator/stats", timeout=10.0, trust_env=False)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats


def _config(settings: EmulatorSettings, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )


@contextmanager
def run_emulator(
    settings: EmulatorSettings | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningEmulator]:
    """Serve the emulator from a daemon thread (ephemeral port by default) while in the block."""
    server = uvicorn.Server(_config(settings or EmulatorSettings(), host, port, "warning"))
    thread = threading.Thread(target=server.run, name="segmind-emulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the Segmind emulator did not start on {host}:{port}")
        time.sleep(0.01)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningEmulator(url=f"http://{host}:{bound_port}", _server=server)
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)


def serve(settings: EmulatorSettings, host: str, port: int) -> None:
    """Serve in the foreground until interrupted."""
    uvicorn.Server(_config(settings, host, port, "info")).run()

"""What the benchmarks share: the emulator in a subprocess and its request counter."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

#: The key every benchmark's emulator accepts.
KEY = "SG_0123456789abcdef"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def emulator(*, workers: int, step_time: float, **flags: object) -> Iterator[str]:
    """``flux-pipeline emulator`` in a quiet subprocess; yields its URL.

    ``flags``: more options by name, e.g. ``quota_per_minute=60`` for ``--quota-per-minute=60``.
    """
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "import sys; from flux_pipeline.commands.cli import main; sys.exit(main(sys.argv[1:]))",
        "emulator",
        f"--port={port}",
        f"--api-key={KEY}",
        f"--workers={workers}",
        f"--step-time={step_time}",
        *(f"--{name.replace('_', '-')}={value}" for name, value in flags.items()),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def api_requests(url: str) -> int:
    """API requests the emulator has received (media downloads excluded)."""
    counts = httpx.get(f"{url}/_emulator/stats").json()["requests"]
    return int(sum(n for kind, n in counts.items() if kind != "output"))

"""Fixtures shared by every suite: real servers on loopback, never mocks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from loopback import TEST_KEY


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., Any]]:
    """Start emulators with any settings; each is stopped at the end of the test."""
    from flux_pipeline.emulator import EmulatorSettings, run_emulator

    with ExitStack() as stack:

        def start(**settings: Any) -> Any:
            settings.setdefault("api_keys", (TEST_KEY,))
            return stack.enter_context(run_emulator(EmulatorSettings(**settings)))

        yield start


@pytest.fixture
def emulator(emulator_factory: Callable[..., Any]) -> Any:
    """A fast emulator (8 workers, 20 ms per step) that accepts ``TEST_KEY``."""
    return emulator_factory(workers=8, step_time=0.02)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API (moto in server mode) on an ephemeral loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """AWS variables pointing s3fs/boto at the moto server; returns the endpoint."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    os.environ.pop("AWS_SECURITY_TOKEN", None)
    return s3_endpoint

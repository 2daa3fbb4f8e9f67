"""Fixtures shared by every suite: real servers on loopback, never mocks."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from flux_pipeline.store.storage import ObjectStore
from tests.support.loopback import TEST_KEY

#: Folders whose slow tests mostly wait on dagster-daemon's fixed 30 s backfill loop (idle).
DAEMON_SUITES = ("daemon", "postgres")
#: pytest-timeout's bound for a slow test (pyproject.toml's 600 s for the rest): a hang bound,
#: never a pass criterion; a daemon test that takes 90 s alone took over 300 s at load 20.
SLOW_TIMEOUT = 1200


def _start_rank(item: pytest.Item) -> int:
    """0: a slow test of :data:`DAEMON_SUITES`; 1: another slow test; 2: the rest."""
    if item.get_closest_marker("slow") is None:
        return 2
    return 0 if item.path.parent.name in DAEMON_SUITES else 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test``: ``--dist load --maxschedchunk 1`` hands a worker its
    next test when it is nearly done), the longest tests start first, so that the workers end
    together instead of one starting a 2-minute daemon test when the others are done. The order
    is the same in every worker (xdist requires it); a run without xdist keeps pytest's own.
    Slow tests get :data:`SLOW_TIMEOUT`."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))
    if "PYTEST_XDIST_WORKER" in os.environ:
        items.sort(key=_start_rank)  # stable: collection order within a rank


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


@pytest.fixture
def local_store(tmp_path: Path) -> ObjectStore:
    """An object store on a local folder."""
    return ObjectStore.from_uri(str(tmp_path / "root"))


@pytest.fixture
def s3_store(s3_env: str) -> ObjectStore:
    """A fresh bucket on the moto server, rooted under a prefix."""
    import s3fs

    bucket = f"flux-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    return ObjectStore.from_uri(f"s3://{bucket}/pipeline")

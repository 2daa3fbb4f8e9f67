"""What every suite shares about its loopback peers: the test key, fast engine settings and a
free port."""

from __future__ import annotations

import socket
from typing import Any

from flux_pipeline.segmind import EngineConfig

#: The key the shared emulator fixtures (tests/conftest.py) accept.
TEST_KEY = "SG_0123456789abcdef"


def fast_config(base_url: str, **overrides: Any) -> EngineConfig:
    """Engine settings fit for a loopback emulator with short steps (override any field)."""
    settings: dict[str, Any] = {
        "api_key": TEST_KEY,
        "base_url": base_url,
        "max_concurrency": 8,
        "requests_per_minute": 30_000.0,
        "prior_step_time": 0.02,
        "backoff_base": 0.01,
        "backoff_max": 0.2,
        "deadline": 60.0,
        **overrides,
    }
    return EngineConfig(**settings)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port

"""Arrow's allocator in a process that loads the code location: the system one by default."""

from __future__ import annotations

import os
import subprocess
import sys

_PROBE = (
    "import flux_pipeline.definitions, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
)


def _backend(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    run = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return run.stdout.strip()


def test_the_code_location_gives_arrow_the_system_allocator() -> None:
    # mimalloc kept a build's freed table memory per thread: RSS grew with the range.
    assert _backend() == "system"


def test_an_allocator_the_user_chose_is_kept() -> None:
    assert _backend(ARROW_DEFAULT_MEMORY_POOL="mimalloc") == "mimalloc"

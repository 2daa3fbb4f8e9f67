"""What the cost tests share (tests/builder, tests/commands, tests/dagster): a prompt table, its
days, ``flux-pipeline plan`` runs, and fixtures that a test folder's ``conftest.py`` imports.

The fixtures: ``service_env`` (the emulator named as the service, which every cost test uses:
``pytestmark = pytest.mark.usefixtures("service_env")``), ``table_csv``, ``table``, ``store``,
``build``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flux_pipeline.builder import BuildReport, build_partition
from flux_pipeline.prompts import load_prompt_table, partition_requests
from flux_pipeline.store.provenance import service_backend
from flux_pipeline.store.storage import ObjectStore
from tests.support import forked_cli
from tests.support.loopback import TEST_KEY, fast_config

COMMAND = Path(sys.executable).with_name("flux-pipeline")
DAYS = ("2026-11-20", "2026-11-21")
#: Four prompts: ``whale`` pins its seed (the same request key every day); ``blocked`` ends in a
#: final FAILED on the emulator (its safety filter).
TABLE = """prompt_id,prompt,seed,steps,aspect_ratio
fox,a red fox in snow,,1,1:1
whale,a humpback whale breaching,11,1,16:9
tower,a spiral library tower,,1,9:21
blocked,something nsfw,,1,1:1
"""


def plan(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``flux-pipeline plan ARGS`` in a subprocess; ``env`` is added (FLUX_PROMPTS removed)."""
    environment = {k: v for k, v in os.environ.items() if k != "FLUX_PROMPTS"}
    return forked_cli.run([str(COMMAND), "plan", *args], env={**environment, **env})


def plan_json(*args: str, **env: str) -> dict[str, Any]:
    """``flux-pipeline plan ARGS --json``, which must succeed, parsed."""
    run = plan(*args, "--json", **env)
    assert run.returncode == 0, run.stderr
    body: dict[str, Any] = json.loads(run.stdout)
    return body


@pytest.fixture
def service_env(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """The emulator named as the service, as a deployment names its own: builds and ``plan``
    (which reads these variables) then agree on the backend; returns its name."""
    monkeypatch.setenv("SEGMIND_BASE_URL", emulator.url)
    monkeypatch.setenv("SEGMIND_API_KEY", TEST_KEY)
    return service_backend(emulator.url)


@pytest.fixture
def table_csv(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.csv"
    path.write_text(TABLE)
    return path


@pytest.fixture
def table(table_csv: Path) -> pd.DataFrame:
    return load_prompt_table(str(table_csv))


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return ObjectStore.from_uri(str(tmp_path / "data"))


@pytest.fixture
def build(emulator: Any, store: ObjectStore, table: pd.DataFrame) -> Callable[..., BuildReport]:
    """Build one day of ``table`` into ``store`` on the emulator (engine settings overridable)."""

    def run(day: str, **engine: Any) -> BuildReport:
        return build_partition(
            partition_requests(table, day),
            partition=day,
            store=store,
            engine_config=fast_config(emulator.url, **engine),
        )

    return run

"""Fixtures of the cost suite: a storage root, a small prompt table, builds on the emulator."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from cost_support import TABLE
from loopback import TEST_KEY, fast_config

from flux_pipeline.builder import BuildReport, build_partition
from flux_pipeline.prompts import load_prompt_table, partition_requests
from flux_pipeline.store.provenance import service_backend
from flux_pipeline.store.storage import ObjectStore

# The budget test drives Dagster with the Dagster suite's helpers (module dagster_support).
_DAGSTER_SUITE = str(Path(__file__).resolve().parents[1] / "dagster")
if _DAGSTER_SUITE not in sys.path:
    sys.path.append(_DAGSTER_SUITE)


@pytest.fixture(autouse=True)
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

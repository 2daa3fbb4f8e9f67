"""Fixtures of the dataset suite: partitions built on the emulator, offline Hugging Face."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from flux_pipeline.builder import build_partition
from flux_pipeline.prompts import load_prompt_table, partition_requests
from flux_pipeline.store.storage import ObjectStore
from tests.support.dataset_builds import DAYS, TABLE
from tests.support.designer_support import Designer
from tests.support.loopback import fast_config


@pytest.fixture(autouse=True)
def hf_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No hub access and a private cache: returns the cache dir to pass as ``cache_dir``."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def build_days(emulator: Any, tmp_path: Path) -> Callable[..., ObjectStore]:
    """Build ``DAYS`` (or the given days) of ``table`` into ``store`` on the emulator."""

    def build(store: ObjectStore, table: str = TABLE, days: tuple[str, ...] = DAYS) -> ObjectStore:
        path = tmp_path / f"table-{uuid.uuid4().hex}.csv"
        path.write_text(table)
        prompts = load_prompt_table(str(path))
        for day in days:
            build_partition(
                partition_requests(prompts, day),
                partition=day,
                store=store,
                engine_config=fast_config(emulator.url),
            )
        return store

    return build


@pytest.fixture
def local_root(tmp_path: Path) -> ObjectStore:
    return ObjectStore.from_uri(str(tmp_path / "root"))


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    """A fresh bucket on the moto server (AWS variables set)."""
    import s3fs

    bucket = f"flux-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    return bucket


@pytest.fixture
def designer(emulator_factory: Callable[..., Any], tmp_path: Path) -> Iterator[Designer]:
    """A runner against a fast emulator (10 ms steps) and a local root under ``tmp_path``."""
    emulator = emulator_factory(workers=8, step_time=0.01)
    with dg.instance_for_test() as instance:
        yield Designer(emulator, tmp_path / "root", instance)

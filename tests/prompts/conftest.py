"""Fixtures of the prompts suite: a fast emulator, a Dagster instance, a runner of the assets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from loopback import TEST_KEY


class Designer:
    """Materializes ``prompt_table`` and ``generated_images`` (with its checks) in-process,
    against one emulator and one storage root."""

    def __init__(self, emulator: Any, root: Path, instance: dg.DagsterInstance) -> None:
        from flux_pipeline.resources import ObjectStoreResource, SegmindResource
        from flux_pipeline.store.storage import ObjectStore

        self.emulator = emulator
        self.root = root
        self.store = ObjectStore.from_uri(str(root))
        self.instance = instance
        self.resources = {
            "segmind": SegmindResource(api_key=TEST_KEY, base_url=emulator.url),
            "storage": ObjectStoreResource(root=str(root)),
        }

    def submits(self) -> int:
        """Jobs the emulator accepted so far (v2 submits and v1 POSTs)."""
        requests = self.emulator.stats()["requests"]
        return int(requests["submit"] + requests["sync"])

    def api_requests(self) -> int:
        requests = self.emulator.stats()["requests"]
        return int(sum(requests[k] for k in ("submit", "status", "result", "sync")))

    def build(self, partition: str, *, table: bool = True) -> dg.ExecuteInProcessResult:
        """``prompt_table`` (when ``table``), then ``generated_images`` of ``partition`` and
        its checks."""
        from flux_pipeline.assets import generated_images, generated_images_checks, prompt_table

        assets = [prompt_table, generated_images, *generated_images_checks]
        if table:
            result = dg.materialize(
                assets,
                selection=["prompt_table"],
                resources=self.resources,
                instance=self.instance,
                raise_on_error=False,
            )
            if not result.success:
                return result
        return dg.materialize(
            assets,
            selection=["generated_images"],
            partition_key=partition,
            resources=self.resources,
            instance=self.instance,
            raise_on_error=False,
        )


@pytest.fixture
def designer(emulator_factory: Callable[..., Any], tmp_path: Path) -> Iterator[Designer]:
    """A runner against a fast emulator (20 ms steps) and a local root under ``tmp_path``."""
    emulator = emulator_factory(workers=8, step_time=0.01)
    with dg.instance_for_test() as instance:
        yield Designer(emulator, tmp_path / "root", instance)


@pytest.fixture
def hf_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No hub access and a private cache: returns the cache dir to pass as ``cache_dir``."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return cache


def check_passed(result: dg.ExecuteInProcessResult, name: str) -> bool:
    """Whether the check ``name`` of ``generated_images`` passed in ``result``."""
    found = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    assert found, f"no evaluation of {name}"
    return all(e.passed for e in found)

"""A runner of ``prompt_table`` and ``generated_images`` (with its checks) for the dataset
design tests: one emulator, one storage root, one Dagster instance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from tests.support.dagster_support import make_resources
from tests.support.loopback import TEST_KEY


class Designer:
    """Materializes ``prompt_table`` and ``generated_images`` (with its checks) in-process,
    against one emulator and one storage root."""

    def __init__(self, emulator: Any, root: Path, instance: dg.DagsterInstance) -> None:
        from flux_pipeline.store.storage import ObjectStore

        self.emulator = emulator
        self.root = root
        self.store = ObjectStore.from_uri(str(root))
        self.instance = instance
        self.resources = make_resources(emulator.url, str(root), api_key=TEST_KEY)

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


def check_passed(result: dg.ExecuteInProcessResult, name: str) -> bool:
    """Whether the check ``name`` of ``generated_images`` passed in ``result``."""
    found = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    assert found, f"no evaluation of {name}"
    return all(e.passed for e in found)

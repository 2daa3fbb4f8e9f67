"""The README's order, as a new user follows it: the demo on the embedded emulator, then the same
demo against a configured service on the same root. Nothing synthetic passes as the service's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from flux_pipeline.store.provenance import EMBEDDED_EMULATOR, service_backend
from tests.support import forked_cli
from tests.support.loopback import TEST_KEY

DAY = "2026-11-20"
BIN = Path(sys.executable).parent


def _cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``flux-pipeline ARGS`` in ``cwd``: no Segmind variables but those in ``env``."""
    inherited = {
        k: v for k, v in os.environ.items() if k not in {"SEGMIND_API_KEY", "SEGMIND_BASE_URL"}
    }
    run = forked_cli.run([str(BIN / "flux-pipeline"), *args], cwd=cwd, env={**inherited, **env})
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return run


def test_a_partition_built_on_the_emulator_is_generated_again_by_the_service(
    emulator_factory: Callable[..., Any], prompts_csv: Path, tmp_path: Path
) -> None:
    service = emulator_factory(workers=8, step_time=0.02)
    root = tmp_path / "data"
    (tmp_path / "home").mkdir()
    common = {
        "DAGSTER_HOME": str(tmp_path / "home"),
        "FLUX_STORAGE_ROOT": str(root),
        "FLUX_PROMPTS": str(prompts_csv),
    }
    configured = {**common, "SEGMIND_API_KEY": TEST_KEY, "SEGMIND_BASE_URL": service.url}

    _cli(tmp_path, "demo", "--partition", DAY, **common)
    synthetic = pd.read_parquet(root / "lineage")
    assert set(synthetic["backend"]) == {EMBEDDED_EMULATOR}
    prompts = len(synthetic)

    # The plan for the service sees nothing of its own: every image is to submit.
    plan = json.loads(_cli(tmp_path, "plan", "--partition", DAY, "--json", **configured).stdout)
    assert plan["backend"] == service_backend(service.url)
    (day,) = plan["partitions"]
    assert (day["reusable"], day["to_submit"]) == (0, prompts)
    assert plan["total"]["to_submit"] == prompts

    # An export made now leaves the synthetic rows out, and says so.
    export = _cli(tmp_path, "export", "webdataset", str(tmp_path / "shards"), **common)
    assert f"left out {prompts} row(s) no service made" in export.stdout
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert (manifest["samples"], manifest["synthetic_skipped"]) == (0, prompts)

    rebuilt = _cli(tmp_path, "demo", "--partition", DAY, **configured)
    assert f"backend: {service_backend(service.url)}" in rebuilt.stdout
    assert service.stats()["requests"]["submit"] == prompts  # nothing synthetic reused
    real = pd.read_parquet(root / "lineage")
    assert set(real["backend"]) == {service_backend(service.url)}
    assert not real["cached"].any()
    assert set(real["image_uri"]).isdisjoint(synthetic["image_uri"])  # two files, two makers
    for row in synthetic.itertuples():  # the emulator's files are untouched beside them
        assert Path(str(row.image_uri)).stat().st_size == row.image_bytes
    metadata = [
        json.loads(line)
        for line in (root / "images" / f"partition={DAY}" / "metadata.jsonl")
        .read_text()
        .splitlines()
    ]
    assert {m["backend"] for m in metadata} == {service_backend(service.url)}
    assert {m["file_name"] for m in metadata} == {Path(str(u)).name for u in real["image_uri"]}

    export = _cli(tmp_path, "export", "webdataset", str(tmp_path / "shards"), **common)
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert (manifest["samples"], manifest["synthetic_skipped"]) == (prompts, 0)

    # Back on the emulator, the partition is synthetic again, from the emulator's own images.
    again = _cli(tmp_path, "demo", "--partition", DAY, **common)
    assert f"{prompts} reused from storage; 0 API requests" in again.stdout
    assert set(pd.read_parquet(root / "lineage")["backend"]) == {EMBEDDED_EMULATOR}
    assert service.stats()["requests"]["submit"] == prompts

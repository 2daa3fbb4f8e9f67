"""``dagster asset materialize -m flux_pipeline.definitions`` from another working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.support import forked_cli
from tests.support.dagster_support import KEY, PARTITION

DAGSTER = Path(sys.executable).with_name("dagster")


@pytest.mark.slow
def test_the_dagster_cli_materializes_a_partition_from_any_directory(
    fast_emulator: Any, prompts_csv: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "home").mkdir()
    root = tmp_path / "data"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "FLUX_STORAGE_ROOT": str(root),
        "FLUX_PROMPTS": str(prompts_csv),
        "SEGMIND_API_KEY": KEY,
        "SEGMIND_BASE_URL": fast_emulator.url,
    }
    base = [str(DAGSTER), "asset", "materialize", "-m", "flux_pipeline.definitions"]

    steps = (
        ["--select", "prompt_table"],
        ["--select", "generated_images", "--partition", PARTITION],
    )
    for step in steps:
        run = subprocess.run(
            [*base, *step],
            check=False,
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert KEY not in run.stdout + run.stderr

    lineage = pd.read_parquet(root / "lineage" / f"partition={PARTITION}" / "lineage.parquet")
    assert len(lineage) == 6
    assert set(lineage["status"]) == {"COMPLETED"}
    assert fast_emulator.stats()["requests"]["submit"] == 6
    assert not (elsewhere / "data").exists()


@pytest.mark.slow
def test_one_shell_command_builds_a_partition_range_in_one_run(
    fast_emulator: Any, prompts_csv: Path, tmp_path: Path
) -> None:
    """``dagster asset materialize --partition-range`` needs a single-run backfill policy in
    Dagster 1.13; ``dagster job execute`` with the range tags is the one-command equivalent."""
    import dagster as dg

    home, root = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "FLUX_STORAGE_ROOT": str(root),
        "FLUX_PROMPTS": str(prompts_csv),
        "SEGMIND_API_KEY": KEY,
        "SEGMIND_BASE_URL": fast_emulator.url,
    }
    tags = (
        '{"dagster/asset_partition_range_start": "2026-11-20", '
        '"dagster/asset_partition_range_end": "2026-11-22"}'
    )
    command = [str(DAGSTER), "job", "execute", "-m", "flux_pipeline.definitions"]
    run = forked_cli.run([*command, "-j", "synthetic_build", "--tags", tags], env=env)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert len(instance.get_run_records()) == 1
        records = instance.fetch_materializations(dg.AssetKey("generated_images"), limit=10)
        partitions = sorted(str(r.asset_materialization.partition) for r in records.records)
    assert partitions == ["2026-11-20", "2026-11-21", "2026-11-22"]
    for partition in partitions:
        lineage = pd.read_parquet(root / "lineage" / f"partition={partition}" / "lineage.parquet")
        assert len(lineage) == 6
    assert (root / "metrics" / "generation_metrics.parquet").exists()

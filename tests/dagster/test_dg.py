"""``dg``, as a Dagster user types it in the project's folder: ``dg check defs``, ``dg list defs``
and ``dg launch`` of ``prompt_table`` then a partition of ``generated_images`` (the embedded
emulator), with the project's ``.venv`` and a ``uv`` on the PATH that must never run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from tests.support.dagster_support import PARTITION

PROJECT = Path(__file__).resolve().parents[2]
DG = Path(sys.executable).with_name("dg")


@pytest.mark.slow
def test_dg_checks_lists_and_launches_the_project(prompts_csv: Path, tmp_path: Path) -> None:
    home, root, trap = tmp_path / "home", tmp_path / "data", tmp_path / "bin"
    home.mkdir()
    trap.mkdir()
    (trap / "uv").write_text(f"#!/bin/sh\ntouch {tmp_path / 'uv-ran'}\nexit 1\n")
    (trap / "uv").chmod(0o755)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SEGMIND_API_KEY", "SEGMIND_BASE_URL", "VIRTUAL_ENV")
    }
    env.update(
        PATH=f"{trap}{os.pathsep}{env.get('PATH', '')}",
        DAGSTER_HOME=str(home),
        FLUX_STORAGE_ROOT=str(root),
        FLUX_PROMPTS=str(prompts_csv),
    )

    def dg_cli(*args: str) -> subprocess.CompletedProcess[str]:
        run = subprocess.run(
            [str(DG), *args],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "virtual environment" not in run.stderr  # dg found the project's own .venv
        return run

    assert "All definitions loaded successfully" in dg_cli("check", "defs").stdout
    listed = json.loads(dg_cli("list", "defs", "--json").stdout)
    assert {a["asset_key"] for a in listed["assets"]} == {
        "prompt_table",
        "generated_images",
        "near_duplicates",
        "generation_metrics",
        "attribute_metrics",
        "account_reconciliation",
    }
    assert len(listed["asset_checks"]) == 6
    assert sorted(job["name"] for job in listed["jobs"]) == [
        "account_reconciliation_job",
        "synthetic_build",
    ]
    dg_cli("launch", "--assets", "prompt_table")
    dg_cli("launch", "--assets", "generated_images", "--partition", PARTITION)

    assert not (tmp_path / "uv-ran").exists()
    lineage = pd.read_parquet(root / "lineage" / f"partition={PARTITION}" / "lineage.parquet")
    assert len(lineage) == 6
    assert set(lineage["status"]) == {"COMPLETED"}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_run_records()
        assert [r.dagster_run.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 2
        assert instance.fetch_materializations(dg.AssetKey("generated_images"), limit=1).records

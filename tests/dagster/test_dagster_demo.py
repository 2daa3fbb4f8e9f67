"""``flux-pipeline demo``: today's partition through Dagster on the embedded emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

FLUX_PIPELINE = Path(sys.executable).with_name("flux-pipeline")


@pytest.mark.slow
def test_demo_builds_today_on_the_embedded_emulator_and_says_where(
    prompts_csv: Path, tmp_path: Path
) -> None:
    today = datetime.now(UTC).date().isoformat()
    (tmp_path / "home").mkdir()
    root = tmp_path / "data"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"SEGMIND_API_KEY", "SEGMIND_BASE_URL"}
    }
    env.update(
        DAGSTER_HOME=str(tmp_path / "home"),
        FLUX_STORAGE_ROOT=str(root),
        FLUX_PROMPTS=str(prompts_csv),
    )

    def demo() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FLUX_PIPELINE), "demo"],
            check=False,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )

    run = demo()
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "SYNTHETIC" in output
    lineage_file = root / "lineage" / f"partition={today}" / "lineage.parquet"
    assert f"lineage: {lineage_file}" in run.stdout
    assert f"images:  {root / 'images' / f'partition={today}'}" in run.stdout
    assert "6 images completed, 0 failed" in run.stdout
    assert "asset checks: 4/4 passed" in run.stdout
    assert len(pd.read_parquet(lineage_file)) == 6
    assert any((tmp_path / "home").iterdir())  # the run is recorded in DAGSTER_HOME
    assert "backend: embedded emulator: SYNTHETIC" in run.stdout
    assert "inference_time p50 " in run.stdout

    again = demo()  # the same day again: everything comes from storage
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "6 images completed, 0 failed, 6 reused from storage; 0 API requests" in again.stdout
    assert "inference_time: none generated in this run" in again.stdout

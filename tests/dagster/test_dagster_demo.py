"""``flux-pipeline demo``: today's partition through Dagster on the embedded emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from tests.support import forked_cli

FLUX_PIPELINE = Path(sys.executable).with_name("flux-pipeline")


@pytest.mark.slow
def test_demo_builds_today_on_the_embedded_emulator_and_says_where(
    prompts_csv: Path, tmp_path: Path
) -> None:
    today = datetime.now(UTC).date().isoformat()
    (tmp_path / "home").mkdir()
    root = tmp_path / "data"

    def demo() -> subprocess.CompletedProcess[str]:
        return _demo(
            tmp_path,
            DAGSTER_HOME=str(tmp_path / "home"),
            FLUX_STORAGE_ROOT=str(root),
            FLUX_PROMPTS=str(prompts_csv),
        )

    run = demo()
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "SYNTHETIC" in output
    lineage_file = root / "lineage" / f"partition={today}" / "lineage.parquet"
    assert f"lineage: {lineage_file}" in run.stdout
    assert f"images:  {root / 'images' / f'partition={today}'}" in run.stdout
    assert "6 images completed, 0 failed" in run.stdout
    assert "asset checks: 6/6 passed" in run.stdout
    assert len(pd.read_parquet(lineage_file)) == 6
    assert any((tmp_path / "home").iterdir())  # the run is recorded in DAGSTER_HOME
    assert "backend: embedded emulator: SYNTHETIC" in run.stdout
    assert "inference_time p50 " in run.stdout

    again = demo()  # the same day again: everything comes from storage
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "6 images completed, 0 failed, 6 reused from storage; 0 API requests" in again.stdout
    p50_line = next(line for line in run.stdout.splitlines() if "inference_time p50" in line)
    assert p50_line in again.stdout  # its own images: the partition's timings are unchanged


def test_demo_with_a_bad_prompt_table_prints_its_problems_without_a_traceback(
    tmp_path: Path,
) -> None:
    table = tmp_path / "bad.csv"
    table.write_text('prompt_id,prompt,seed,steps,aspect_ratio\nfox,"A fox",,9,1:1\nowl,,,4,7:7\n')

    run = _demo(tmp_path, FLUX_PROMPTS=str(table), FLUX_STORAGE_ROOT=str(tmp_path / "data"))

    output = run.stdout + run.stderr
    assert run.returncode == 1
    assert "Traceback" not in output
    assert "row 1, prompt_id 'fox', field 'steps'" in run.stderr
    assert "row 2, prompt_id 'owl', field 'prompt'" in run.stderr
    assert "row 2, prompt_id 'owl', field 'aspect_ratio'" in run.stderr
    assert len(output.splitlines()) <= 8
    assert not (tmp_path / "data").exists()  # nothing written, nothing lost


def _demo(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``flux-pipeline demo`` in ``cwd`` with ``env``, no Segmind variables: the emulator."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if key not in {"SEGMIND_API_KEY", "SEGMIND_BASE_URL"}
    }
    return forked_cli.run([str(FLUX_PIPELINE), "demo"], cwd=cwd, env={**inherited, **env})

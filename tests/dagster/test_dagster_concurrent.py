"""Two ``dagster asset materialize`` of one partition, started together, pay each image once.

Each process claims a request key before it submits it; a key the other process holds is
waited for and its image reused. The emulator counts the submits it accepted per request key;
the build's own log lines (captured into each run's event log through ``python_logs``) show that
one run did wait on the other, so the runs really raced for the keys.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from tests.support import forked_cli
from tests.support.dagster_support import KEY, PARTITION

DAGSTER = Path(sys.executable).with_name("dagster")
PROMPTS = 40
#: Each instance captures the build's log lines into its runs' event logs.
INSTANCE_YAML = """python_logs:
  managed_python_loggers: [flux_pipeline.builder]
  python_log_level: INFO
"""


@pytest.mark.slow
def test_two_materializations_of_one_partition_started_together_pay_each_image_once(
    emulator_factory: Callable[..., Any], tmp_path: Path
) -> None:
    emulator = emulator_factory(api_keys=(KEY,), workers=4, step_time=0.25)  # ~5 s of work
    table = tmp_path / "prompts.csv"
    rows = [f"p{n:02d},a paper boat number {n} on a pond,,2,1:1" for n in range(PROMPTS)]
    table.write_text("\n".join(["prompt_id,prompt,seed,steps,aspect_ratio", *rows, ""]))
    root = tmp_path / "data"
    env = {
        **os.environ,
        "FLUX_STORAGE_ROOT": str(root),
        "FLUX_PROMPTS": str(table),
        "SEGMIND_API_KEY": KEY,
        "SEGMIND_BASE_URL": emulator.url,
    }
    materialize = [str(DAGSTER), "asset", "materialize", "-m", "flux_pipeline.definitions"]

    def start(name: str, *select: str) -> forked_cli.Command:
        home = tmp_path / name
        home.mkdir()
        (home / "dagster.yaml").write_text(INSTANCE_YAML)
        return forked_cli.start(
            [*materialize, *select],
            env={**env, "DAGSTER_HOME": str(home)},
            output=tmp_path / f"{name}.log",
        )

    table_run = start("home-table", "--select", "prompt_table")
    assert table_run.wait(timeout=600) == 0, table_run.communicate()[0][-3000:]

    runs = [
        start(f"home-{n}", "--select", "generated_images", "--partition", PARTITION) for n in (1, 2)
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]

    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-3000:]
    waited = []
    for n in (1, 2):
        with dg.DagsterInstance.from_config(str(tmp_path / f"home-{n}")) as instance:
            [record] = instance.get_run_records()
            messages = [e.user_message for e in instance.all_logs(record.dagster_run.run_id)]
            waited.append(any("claimed by another live run" in m for m in messages))
    assert any(waited)  # one run found keys the other held, waited and reused them
    stats = emulator.stats()
    assert stats["requests"]["submit"] == PROMPTS
    assert sorted(stats["jobs"]["by_request_key"].values()) == [1] * PROMPTS
    lineage = pd.read_parquet(root / "lineage" / f"partition={PARTITION}" / "lineage.parquet")
    assert len(lineage) == PROMPTS
    assert set(lineage["status"]) == {"COMPLETED"}
    assert not lineage["cached"].any()  # made for this partition, whichever run paid
    assert lineage["request_id"].nunique() == PROMPTS

"""``deploy/local/dagster.yaml``: the instance `make ui` and `make demo` start with."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg

from flux_pipeline.assets.segmind_pool import pool_share

LOCAL_YAML = Path(__file__).resolve().parents[2] / "deploy" / "local" / "dagster.yaml"


def test_local_instance_limits_the_segmind_pool_without_per_step_slots(tmp_path: Path) -> None:
    shutil.copy(LOCAL_YAML, tmp_path / "dagster.yaml")

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        share = pool_share(instance)
        concurrency = instance.get_concurrency_config()
        pools = concurrency.pool_config
        queue = concurrency.run_queue_config

    assert (share.slots, share.limited) == (1, True)  # a run alone: the whole quota
    assert pools.pool_granularity is not None
    assert pools.pool_granularity.value == "run"  # a killed local run leaves no slot held
    assert queue is not None
    assert queue.max_concurrent_runs == 4

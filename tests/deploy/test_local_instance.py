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


def test_local_instance_retries_dead_runs_and_knows_pools_before_queueing(tmp_path: Path) -> None:
    from flux_pipeline.assets.run_queue import PoolQueuedRunCoordinator

    shutil.copy(LOCAL_YAML, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_coordinator, PoolQueuedRunCoordinator)
        assert instance.run_retries_enabled
        assert instance.run_retries_max_retries == 2
        assert not instance.run_retries_retry_on_asset_or_op_failure
        assert instance.run_monitoring_enabled

"""The private Dagster behaviour ``assets/dagster_internals.py`` relies on, pinned for the
release it was verified with: on a Dagster upgrade this module fails first, naming what moved."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
from dagster._core.execution.backfill import PartitionBackfill

from flux_pipeline.assets.dagster_internals import (
    VERIFIED_WITH,
    backfill_target,
    coordinator_instance,
    create_missing_pool_limits,
    latest_materialization_target,
    pool_limit,
    run_pools,
)

DAYS = dg.DailyPartitionsDefinition(start_date="2026-11-01")


@dg.asset(partitions_def=DAYS)
def daily() -> None:
    """A partitioned asset."""


@dg.op(pool="talks")
def pooled_op() -> None:
    """A step that holds the pool ``talks``."""


@dg.job
def pooled() -> None:
    pooled_op()


def test_the_adapter_was_verified_with_the_installed_dagster() -> None:
    assert dg.__version__ == VERIFIED_WITH, (
        "Dagster moved: run tests/dagster/test_dagster_internals.py and update VERIFIED_WITH "
        "in assets/dagster_internals.py once every wrapped behaviour is checked"
    )


def test_pool_limit_rows_are_made_at_the_default_limit(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text(
        "run_coordinator:\n"
        "  module: flux_pipeline.assets.run_queue\n"
        "  class: PoolQueuedRunCoordinator\n"
        "concurrency:\n  pools:\n    default_limit: 2\n"
    )
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert coordinator_instance(instance.run_coordinator) is instance  # type: ignore[arg-type]
        run = instance.create_run_for_job(pooled)
        assert run_pools(run) == {"talks"}
        rows = instance.event_log_storage.get_concurrency_keys
        assert "talks" not in rows()  # a pool never seen has no row...
        assert pool_limit(instance, "talks") == 2  # ...and reads as the default limit
        assert create_missing_pool_limits(instance, ["talks"]) == ["talks"]
        assert "talks" in rows()
        assert pool_limit(instance, "talks") == 2
        assert create_missing_pool_limits(instance, ["talks"]) == []


def test_without_a_default_limit_no_row_is_made() -> None:
    with dg.instance_for_test() as instance:
        assert create_missing_pool_limits(instance, ["talks"]) == []
        assert pool_limit(instance, "talks") is None


def test_an_asset_backfill_s_partitions_per_asset() -> None:
    defs = dg.Definitions(assets=[daily])
    with dg.instance_for_test() as instance:
        assert backfill_target(instance, "nope", defs) is None
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id="bkfl0001",
            asset_graph=defs.resolve_asset_graph(),
            partition_names=["2026-11-02", "2026-11-01"],
            asset_selection=[daily.key],
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=None,
            description=None,
            run_config=None,
        )
        instance.add_backfill(backfill)
        target = backfill_target(instance, "bkfl0001", defs)
    assert target is not None
    assert target.job_name is None
    assert {key: sorted(keys) for key, keys in target.asset_partitions.items()} == {
        daily.key: ["2026-11-01", "2026-11-02"]
    }


def test_a_check_names_the_latest_materialization_of_its_partition() -> None:
    with dg.instance_for_test() as instance:
        assert latest_materialization_target(instance, daily.key, "2026-11-01") is None
        for _ in range(2):
            dg.materialize([daily], instance=instance, partition_key="2026-11-01")
        latest = instance.fetch_materializations(daily.key, limit=1).records[0]
        target = latest_materialization_target(instance, daily.key, "2026-11-01")
        assert target is not None
        assert (target.storage_id, target.run_id) == (latest.storage_id, latest.run_id)
        evaluation = dg.AssetCheckEvaluation(
            asset_key=daily.key,
            check_name="c",
            passed=True,
            target_materialization_data=target,
            partition="2026-11-01",
        )
        assert evaluation.target_materialization_data == target

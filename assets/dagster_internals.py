"""What this package needs of Dagster beyond its public API, in one place.

Dagster 1.13.27 has no public API for these: a run's pools and the instance's pool limit rows
(the run queue, each run's share of the account), a backfill's target partitions
(``flux-pipeline plan --backfill``), and the materialization an asset check result is about.
Each function wraps one private piece; ``tests/dagster/test_dagster_internals.py`` pins the
behaviour relied on, for :data:`VERIFIED_WITH`. On a Dagster upgrade, run that test first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from sqlalchemy.exc import DBAPIError

#: The Dagster release the wrapped private behaviour was checked against.
VERIFIED_WITH = "1.13.27"


def coordinator_instance(coordinator: dg.QueuedRunCoordinator) -> dg.DagsterInstance:
    """The instance a run coordinator was configured for (Dagster sets it after ``__init__``)."""
    return coordinator._instance


def run_pools(run: dg.DagsterRun) -> set[str]:
    """The pools the steps of ``run`` hold (``DagsterRun.run_op_concurrency``)."""
    concurrency = run.run_op_concurrency
    if concurrency is None or not concurrency.all_pools:
        return set()
    return set(concurrency.all_pools)


def pool_limit(instance: dg.DagsterInstance, pool: str) -> int | None:
    """The limit of ``pool``: its row's, else the instance's ``default_limit``; None if neither."""
    return instance.event_log_storage.get_concurrency_info(pool).limit


def create_missing_pool_limits(instance: dg.DagsterInstance, pools: Iterable[str]) -> list[str]:
    """Create the missing limit rows of ``pools`` at the instance's ``default_limit`` (none when
    it has no default); returns the pools created."""
    storage = instance.event_log_storage
    if instance.global_op_concurrency_default_limit is None:
        return []
    missing = sorted(set(pools) - storage.get_concurrency_keys())
    return [pool for pool in missing if _initialize_pool_limit(instance, pool)]


def _initialize_pool_limit(instance: dg.DagsterInstance, pool: str) -> bool:
    """Create ``pool``'s limit row at the default; False if another process created it first.

    Two processes can both see the row missing: the sensor and a run being queued, two daemons'
    submits. On Postgres the later insert fails (a unique key), and Dagster's fallback update in
    the same, now aborted, transaction fails too, which failed the run's submission (and its
    backfill made one more run). That race is settled here: the row exists either way.
    """
    storage = instance.event_log_storage
    try:
        return storage.initialize_concurrency_limit_to_default(pool)
    except DBAPIError:
        if pool in storage.get_concurrency_keys():
            return False
        raise


@dataclass(frozen=True)
class BackfillTarget:
    """What a backfill targets: a job's partitions, or each asset's partitions."""

    #: The job of a job backfill; None for an asset backfill.
    job_name: str | None
    #: A job backfill's partition names.
    job_partitions: list[str] = field(default_factory=list)
    #: An asset backfill's partition keys, per targeted partitioned asset.
    asset_partitions: Mapping[dg.AssetKey, list[str]] = field(default_factory=dict)


def backfill_target(
    instance: dg.DagsterInstance, backfill_id: str, defs: dg.Definitions
) -> BackfillTarget | None:
    """What backfill ``backfill_id`` targets, an asset backfill read through ``defs``'s asset
    graph; None when the instance has no such backfill (``PartitionBackfill``)."""
    backfill = instance.get_backfill(backfill_id)
    if backfill is None:
        return None
    if not backfill.is_asset_backfill:
        partitions = list(backfill.partition_names or [])
        return BackfillTarget(backfill.job_name, job_partitions=partitions)
    data = backfill.get_asset_backfill_data(defs.resolve_asset_graph())
    return BackfillTarget(
        None,
        asset_partitions={
            key: list(data.get_target_partitions_subset(key).get_partition_keys())
            for key in data.target_subset.partitions_subsets_by_asset_key
        },
    )


def latest_materialization_target(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The latest materialization of ``partition``, as an ``AssetCheckEvaluation`` names the
    materialization it checked (``target_materialization_data``); None before the first."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
    )

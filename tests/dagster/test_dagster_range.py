"""A run of several partitions (how a backfill packs them): one build, and per partition its own
materialization, metadata and check results; the pool and the quota share of each run."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from dagster._core.definitions.backfill_policy import BackfillPolicyType
from PIL import Image

from flux_pipeline.assets.partitions import DEFAULT_MAX_PARTITIONS_PER_RUN, max_partitions_per_run
from flux_pipeline.assets.segmind_pool import SEGMIND_POOL, PoolShare, paced_for_pool, pool_share
from flux_pipeline.definitions import defs
from flux_pipeline.segmind import EngineConfig
from tests.support.dagster_support import Runner, failure_message, key_from_env, metadata_of

RANGE = ["2026-11-20", "2026-11-21", "2026-11-22"]
CHECKS = {
    "one_row_per_prompt",
    "images_match_sha256",
    "failure_rate_below_threshold",
    "images_pass_quality",
    "lineage_schema_as_declared",
}


def _materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    return {
        str(event.partition): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }


def test_a_range_run_materializes_each_partition_with_its_own_metadata_and_checks(
    runner: Runner, fast_emulator: Any, storage_root: Path
) -> None:
    assert runner.prompt_table().success

    result = runner.range(RANGE[0], RANGE[-1])

    assert result.success, failure_message(result)
    materialized = _materializations(result)
    assert sorted(materialized) == RANGE
    assert fast_emulator.stats()["requests"]["submit"] == 3 * 6 - 2  # harbor's seed is pinned
    for partition, meta in materialized.items():
        lineage = pd.read_parquet(
            storage_root / "lineage" / f"partition={partition}" / "lineage.parquet"
        )
        assert meta["dagster/row_count"] == len(lineage) == 6
        assert (meta["completed"], meta["failed"]) == (6, 0)
        assert meta["cached"] == int(lineage["cached"].sum())
        assert meta["http_requests"] == lineage.loc[~lineage["cached"], "attempts"].sum()
        assert meta["lineage"].endswith(f"partition={partition}/lineage.parquet")
        assert meta["inference_time_p50_s"] > 0
        assert meta["backend"] == fast_emulator.url
        assert meta["run_partitions"] == f"{RANGE[0]}...{RANGE[-1]} (3 partitions)"
        assert meta["run_api_requests"] >= 16  # the engine's count over the whole run
        sheet = meta["contact_sheet"]
        assert sheet.split("](", 1)[0].endswith(f"images of {partition}")
        encoded = sheet.split("base64,", 1)[1].rstrip(")")
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as picture:
            assert picture.format == "JPEG"

    evaluations = result.get_asset_check_evaluations()
    assert sorted((e.check_name, e.partition) for e in evaluations) == sorted(
        (name, partition) for name in CHECKS for partition in RANGE
    )
    assert all(evaluation.passed for evaluation in evaluations)
    stored = {
        record.asset_materialization.partition: record.storage_id
        for record in runner.instance.fetch_materializations(
            dg.AssetKey("generated_images"), limit=10
        ).records
        if record.asset_materialization is not None
    }
    for evaluation in evaluations:  # each result points at its own partition's materialization
        target = evaluation.target_materialization_data
        assert target is not None
        assert target.storage_id == stored[evaluation.partition]


def test_a_failed_check_is_reported_on_its_own_partition_only(
    runner: Runner, storage_root: Path
) -> None:
    assert runner.prompt_table().success
    assert runner.range(RANGE[0], RANGE[-1]).success
    victim = next((storage_root / "images" / f"partition={RANGE[1]}").glob("fox-*"))
    victim.write_bytes(bytes(len(victim.read_bytes())))  # same size, other bytes

    def integrity(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
        return {
            str(e.partition): e.passed
            for e in result.get_asset_check_evaluations()
            if e.check_name == "images_match_sha256"
        }

    assert integrity(runner.range_checks(RANGE[0], RANGE[-1])) == {
        RANGE[0]: True,
        RANGE[1]: False,
        RANGE[2]: True,
    }
    # A rebuild trusts no copy whose sha256 differs from its ledger's: the image is made again.
    assert integrity(runner.range(RANGE[0], RANGE[-1])) == dict.fromkeys(RANGE, True)


def test_generated_images_packs_a_month_per_backfill_run_in_the_segmind_pool() -> None:
    images = defs.resolve_assets_def("generated_images")
    policy = images.backfill_policy
    assert policy is not None
    assert policy.policy_type == BackfillPolicyType.MULTI_RUN
    assert policy.max_partitions_per_run == DEFAULT_MAX_PARTITIONS_PER_RUN == 31
    assert images.op.pool == SEGMIND_POOL == "segmind"


def test_max_partitions_per_run_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLUX_MAX_PARTITIONS_PER_RUN", "7")
    assert max_partitions_per_run() == 7
    for bad in ("0", "-3", "a week"):
        monkeypatch.setenv("FLUX_MAX_PARTITIONS_PER_RUN", bad)
        with pytest.raises(ValueError, match="FLUX_MAX_PARTITIONS_PER_RUN"):
            max_partitions_per_run()


def test_each_run_paces_at_its_slots_share_of_the_account_quota() -> None:
    overrides = {"concurrency": {"pools": {"default_limit": 3}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        share = pool_share(instance)
    assert (share.slots, share.source) == (3, "pool 'segmind' limit 3")

    config = EngineConfig(api_key="SG_0123456789abcdef", requests_per_minute=90.0)
    assert paced_for_pool(config, share).requests_per_minute == 30.0
    unpaced = EngineConfig(api_key="SG_0123456789abcdef", requests_per_minute=None)
    assert paced_for_pool(unpaced, share).requests_per_minute is None


def test_without_a_pool_limit_a_run_takes_the_whole_quota(instance: dg.DagsterInstance) -> None:
    assert pool_share(instance) == PoolShare(
        1, "pool 'segmind' has no limit: concurrent runs may exceed the quota", limited=False
    )


def test_a_run_in_a_limited_pool_paces_at_its_share_and_says_so(
    fast_emulator: Any, prompts_csv: Path, storage_root: Path
) -> None:
    from flux_pipeline.resources import ObjectStoreResource, SegmindResource

    resources = {
        "segmind": SegmindResource(
            api_key=key_from_env(), base_url=fast_emulator.url, requests_per_minute=6000.0
        ),
        "storage": ObjectStoreResource(root=str(storage_root)),
    }
    overrides = {"concurrency": {"pools": {"default_limit": 4}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        runner = Runner(resources, instance)
        assert runner.prompt_table().success

        result = runner.partition(RANGE[0])

    assert result.success, failure_message(result)
    meta = metadata_of(result, "generated_images")
    assert meta["quota_share"] == (
        "1500 API requests/min = requests_per_minute 6000 / 4 (pool 'segmind' limit 4)"
    )

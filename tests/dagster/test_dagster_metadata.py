"""What the Dagster UI shows: data versions, column descriptions, the backend, request counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from flux_pipeline.store.lineage import LINEAGE_COLUMNS, LINEAGE_DESCRIPTIONS
from tests.support.dagster_support import KEY, PARTITION, Runner, failure_message, metadata_of

DATA_VERSION = "dagster/data_version"


def _prompt_table_version(result: dg.ExecuteInProcessResult) -> str:
    (materialization,) = result.asset_materializations_for_node("prompt_table")
    return materialization.tags[DATA_VERSION]


def _status(runner: Runner, partition: str) -> StaleStatus:
    from flux_pipeline.assets import generated_images, generation_metrics, prompt_table

    resolver = get_stale_status_resolver(
        runner.instance, [prompt_table, generated_images, generation_metrics]
    )
    return resolver.get_status(dg.AssetKey("generated_images"), partition)


def test_prompt_table_data_version_is_the_hash_of_its_content(
    runner: Runner, prompts_csv: Path
) -> None:
    first = _prompt_table_version(runner.prompt_table())
    again = _prompt_table_version(runner.prompt_table())
    prompts_csv.write_text(prompts_csv.read_text().replace("fresh snow", "deep snow"))
    changed = _prompt_table_version(runner.prompt_table())

    assert len(first) == 64
    assert again == first
    assert changed != first


def test_an_unchanged_prompt_table_leaves_built_partitions_in_sync(
    runner: Runner, prompts_csv: Path
) -> None:
    assert runner.prompt_table().success
    assert runner.partition("2026-11-20").success
    assert runner.prompt_table().success  # what each synthetic_build run does first
    assert runner.partition("2026-11-21").success

    assert _status(runner, "2026-11-20") == StaleStatus.FRESH

    prompts_csv.write_text(prompts_csv.read_text().replace("fresh snow", "deep snow"))
    assert runner.prompt_table().success
    assert _status(runner, "2026-11-20") == StaleStatus.STALE


def test_prompt_table_metadata_explains_the_blank_seeds(runner: Runner) -> None:
    meta = metadata_of(runner.prompt_table(), "prompt_table")

    assert meta["seeds"] == "1 pinned, 5 derived from (prompt_id, partition) in each partition"
    assert meta["preview_rows"] == "first 6 of 6"
    assert len(meta["preview"].records) == 6
    columns = {column.name: column.description for column in meta["dagster/column_schema"].columns}
    assert "derived from (prompt_id, partition)" in columns["seed"]
    assert all(columns.values())


def test_generated_images_metadata_names_the_backend_and_each_kind_of_request(
    runner: Runner, fast_emulator: Any, storage_root: Path
) -> None:
    assert runner.prompt_table().success

    result = runner.partition()

    assert result.success, failure_message(result)
    meta = metadata_of(result, "generated_images")
    assert meta["backend"] == fast_emulator.url
    assert all(KEY not in str(value) for value in meta.values())
    served = fast_emulator.stats()["requests"]
    assert meta["api_requests"] == served["submit"] + served["status"] + served["result"]
    assert meta["media_downloads"] == served["output"] == 6
    assert meta["http_requests"] == meta["api_requests"] + meta["media_downloads"]
    lineage = pd.read_parquet(storage_root / "lineage")
    assert meta["http_requests"] == lineage["attempts"].sum()  # what generation_metrics sums
    assert meta["retried_requests"] == 0
    assert meta["reported_cost"] > 0
    assert meta["cost"] == meta["reported_cost"]  # one partition: all of it generated here
    assert (meta["mode"], meta["mode_used"]) == ("auto", "async")  # no quota binds: v2
    assert (meta["completed_async"], meta["completed_sync"]) == (6, 0)
    assert meta["requests_per_image"] == round(meta["api_requests"] / 6, 3)
    assert (meta["run_new_images"], meta["run_max_new_images"]) == (6, None)
    assert "synthetic" not in meta["contact_sheet"].split("](", 1)[0]  # a configured server
    schema = meta["dagster/column_schema"].columns
    assert [column.name for column in schema] == list(LINEAGE_COLUMNS)
    assert [column.description for column in schema] == [
        LINEAGE_DESCRIPTIONS[name] for name in LINEAGE_COLUMNS
    ]


def test_the_job_builds_a_partition_then_refreshes_the_metrics_on_the_embedded_emulator(
    instance: dg.DagsterInstance, prompts_csv: Path, storage_root: Path
) -> None:
    from flux_pipeline.resources import ObjectStoreResource, SegmindResource

    resources = {
        "segmind": SegmindResource(),
        "storage": ObjectStoreResource(root=str(storage_root)),
    }
    runner = Runner(resources, instance)

    result = runner.job(PARTITION)

    assert result.success, failure_message(result)
    materialized = {
        (event.asset_key.to_user_string(), event.partition)
        for event in result.get_asset_materialization_events()
        if event.asset_key is not None
    }
    assert materialized == {
        ("prompt_table", None),
        ("generated_images", PARTITION),
        ("near_duplicates", None),
        ("generation_metrics", None),
        ("attribute_metrics", None),
    }
    meta = metadata_of(result, "generated_images")
    assert meta["backend"].startswith("embedded emulator: SYNTHETIC images")
    alt = meta["contact_sheet"].split("](", 1)[0]
    assert alt == f"![6 of 6 synthetic images of {PARTITION}"
    metrics = pd.read_parquet(storage_root / "metrics" / "generation_metrics.parquet")
    assert metrics["partition"].tolist() == [PARTITION]
    assert metrics["completed"].tolist() == [6]

"""Real partition builds through Dagster against the emulator over HTTP, on local storage."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from flux_pipeline.report.metrics import METRIC_COLUMNS, METRIC_DESCRIPTIONS
from flux_pipeline.store.provenance import image_id
from tests.support.dagster_support import (
    KEY,
    PARTITION,
    Runner,
    checks_by_name,
    failure_message,
    make_resources,
    metadata_of,
)

PROMPT_IDS = {"fox", "harbor", "tower", "market", "comet", "garden"}
CHECKS = {
    "one_row_per_prompt",
    "images_match_sha256",
    "failure_rate_below_threshold",
    "images_pass_quality",
    "lineage_schema_as_declared",
}


def _requests(stats: dict[str, Any]) -> int:
    return sum(stats["requests"].values())


def _lineage(root: Path, partition: str = PARTITION) -> pd.DataFrame:
    return pd.read_parquet(root / "lineage" / f"partition={partition}" / "lineage.parquet")


def test_partition_build_stores_images_lineage_metadata_and_passes_checks(
    runner: Runner, fast_emulator: Any, storage_root: Path
) -> None:
    assert runner.prompt_table().success
    assert (storage_root / "prompt_table" / "prompt_table.parquet").exists()

    result = runner.partition()

    assert result.success, failure_message(result)
    lineage = _lineage(storage_root)
    assert set(lineage["prompt_id"]) == PROMPT_IDS
    assert len(lineage) == 6
    assert set(lineage["status"]) == {"COMPLETED"}
    for row in lineage.itertuples():
        assert Path(row.image_uri).is_file()
        assert Path(row.image_uri).parent == storage_root / "images" / f"partition={PARTITION}"
    assert fast_emulator.stats()["requests"]["submit"] == 6

    meta = metadata_of(result, "generated_images")
    assert (meta["completed"], meta["failed"], meta["cached"]) == (6, 0, 0)
    assert meta["dagster/row_count"] == 6
    schema_columns = [column.name for column in meta["dagster/column_schema"].columns]
    assert schema_columns[:3] == ["partition", "prompt_id", "prompt"]
    assert meta["inference_time_p50_s"] > 0
    assert meta["inference_time_p95_s"] > 0
    assert meta["api_requests"] >= 6
    assert meta["lineage"].endswith(f"partition={PARTITION}/lineage.parquet")
    sheet = meta["contact_sheet"]
    assert sheet.startswith("![")
    assert "](data:image/jpeg;base64," in sheet
    encoded = sheet.split("base64,", 1)[1].rstrip(")")
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as picture:
        assert picture.format == "JPEG"
    assert len(sheet) < 200_000

    evaluations = checks_by_name(result)
    assert set(evaluations) == CHECKS
    assert all(evaluation.passed for evaluation in evaluations.values())
    assert {evaluation.partition for evaluation in evaluations.values()} == {PARTITION}


def test_rematerializing_a_partition_makes_zero_api_calls(
    runner: Runner, fast_emulator: Any, storage_root: Path
) -> None:
    assert runner.prompt_table().success
    first = runner.partition()
    assert first.success
    before = fast_emulator.stats()["requests"]
    built = _lineage(storage_root)

    again = runner.partition()

    assert again.success, failure_message(again)
    assert fast_emulator.stats()["requests"] == before
    meta = metadata_of(again, "generated_images")
    assert (meta["completed"], meta["cached"], meta["reused"], meta["api_requests"]) == (6, 0, 6, 0)
    # Its own images, rebuilt: the rows (timings, cached false) and so the percentiles stay.
    pd.testing.assert_frame_equal(_lineage(storage_root), built)  # replaced, not appended
    first_meta = metadata_of(first, "generated_images")
    assert meta["inference_time_p50_s"] == first_meta["inference_time_p50_s"]


def test_a_rebuilt_partition_asks_for_identical_requests(
    emulator_factory: Callable[..., Any],
    instance: dg.DagsterInstance,
    prompts_csv: Path,
    tmp_path: Path,
) -> None:
    asked: list[dict[str, int]] = []
    for attempt in ("first", "second"):
        emulator = emulator_factory(api_keys=(KEY,), workers=8, step_time=0.02)
        runner = Runner(make_resources(emulator.url, str(tmp_path / attempt)), instance)
        assert runner.prompt_table().success
        assert runner.partition().success
        asked.append(emulator.stats()["jobs"]["by_request_key"])

    assert len(asked[0]) == 6
    assert asked[0] == asked[1]  # same request keys, each submitted once


def test_other_partitions_ask_for_other_seeds_of_unpinned_prompts(
    runner: Runner, storage_root: Path
) -> None:
    assert runner.prompt_table().success
    assert runner.partition("2026-11-20").success
    assert runner.partition("2026-11-21").success

    first = _lineage(storage_root, "2026-11-20").set_index("prompt_id")["seed"]
    second = _lineage(storage_root, "2026-11-21").set_index("prompt_id")["seed"]
    assert first["harbor"] == second["harbor"] == 7  # pinned in the table
    assert (first.drop("harbor") != second.drop("harbor")).all()


def test_a_bad_prompt_table_fails_naming_row_and_field_before_any_submit(
    runner: Runner, fast_emulator: Any, prompts_csv: Path, storage_root: Path
) -> None:
    prompts_csv.write_text(
        "prompt_id,prompt,seed,steps,aspect_ratio\n"
        "ok,A calm lake,,4,1:1\n"
        "empty,,,4,1:1\n"
        "../x,A path escape,,4,1:1\n"
        "many-steps,A slow render,,12,1:1\n"
        "odd-ratio,A strange frame,,4,7:3\n"
    )

    result = dg.materialize(
        [*_assets()],
        selection=["prompt_table", "generated_images"],
        partition_key=PARTITION,
        resources=runner.resources,
        instance=runner.instance,
        raise_on_error=False,
    )

    assert not result.success
    message = failure_message(result)
    for expected in ("prompt", "steps", "aspect_ratio", "prompt_id", "../x", "empty"):
        assert expected in message, f"{expected!r} missing from: {message}"
    assert "row" in message
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    problems = failure.step_failure_data.user_failure_data.metadata["problems"].records
    assert sorted((r.data["prompt_id"], r.data["field"]) for r in problems) == [
        ("../x", "prompt_id"),
        ("empty", "prompt"),
        ("many-steps", "steps"),
        ("odd-ratio", "aspect_ratio"),
    ]
    assert _requests(fast_emulator.stats()) == 0
    assert not (storage_root / "prompt_table" / "prompt_table.parquet").exists()


def _assets() -> list[Any]:
    from flux_pipeline.assets import generated_images, generated_images_checks, prompt_table

    return [prompt_table, generated_images, *generated_images_checks]


def test_a_failed_image_is_a_lineage_row_not_a_failed_run(
    runner: Runner, prompts_csv: Path, storage_root: Path
) -> None:
    with prompts_csv.open("a") as table:
        table.write('flagged,"An nsfw poster",,4,1:1\n')
    assert runner.prompt_table().success

    result = runner.partition()

    assert result.success, failure_message(result)
    lineage = _lineage(storage_root).set_index("prompt_id")
    assert lineage.loc["flagged", "status"] == "FAILED"
    assert "NSFW" in lineage.loc["flagged", "error"]
    assert metadata_of(result, "generated_images")["failed"] == 1
    evaluations = checks_by_name(result)
    rate = evaluations["failure_rate_below_threshold"]
    assert not rate.passed
    assert rate.severity == dg.AssetCheckSeverity.WARN
    assert rate.metadata["failure_rate"].value == round(1 / 7, 4)
    assert all(evaluations[name].passed for name in CHECKS - {"failure_rate_below_threshold"})


def test_failure_rate_threshold_comes_from_the_environment(
    runner: Runner, prompts_csv: Path, monkeypatch: Any
) -> None:
    with prompts_csv.open("a") as table:
        table.write('flagged,"An nsfw poster",,4,1:1\n')
    assert runner.prompt_table().success
    assert runner.partition().success
    monkeypatch.setenv("FLUX_MAX_FAILURE_RATE", "0.2")

    rate = checks_by_name(runner.checks())["failure_rate_below_threshold"]

    assert rate.passed
    assert rate.metadata["threshold"].value == 0.2


def test_a_wrong_key_fails_the_run_with_the_engines_message_and_no_secret(
    fast_emulator: Any, instance: dg.DagsterInstance, prompts_csv: Path, storage_root: Path
) -> None:
    wrong_key = "SG_ffffffffffffffff"
    runner = Runner(make_resources(fast_emulator.url, str(storage_root), wrong_key), instance)
    assert runner.prompt_table().success

    result = runner.partition()

    assert not result.success
    message = failure_message(result)
    assert "HTTP 401" in message
    assert "SEGMIND_API_KEY" in message
    assert wrong_key not in message
    logs = "\n".join(str(event.message) for event in result.all_events)
    assert wrong_key not in logs


def test_running_out_of_credits_fails_the_run_and_keeps_what_was_paid_for(
    emulator_factory: Callable[..., Any],
    instance: dg.DagsterInstance,
    prompts_csv: Path,
    storage_root: Path,
) -> None:
    emulator = emulator_factory(api_keys=(KEY,), workers=1, step_time=0.02, credits=2)
    runner = Runner(make_resources(emulator.url, str(storage_root)), instance)
    assert runner.prompt_table().success

    result = runner.partition()

    assert not result.success
    assert "HTTP 406" in failure_message(result)
    assert len(list((storage_root / "images" / f"partition={PARTITION}").iterdir())) == 2


def test_checks_fail_on_a_deleted_and_an_altered_image(runner: Runner, storage_root: Path) -> None:
    assert runner.prompt_table().success
    assert runner.partition().success
    lineage = _lineage(storage_root).set_index("prompt_id")
    Path(lineage.loc["fox", "image_uri"]).unlink()
    altered = Path(lineage.loc["tower", "image_uri"])
    altered.write_bytes(altered.read_bytes() + b"\0")

    evaluations = checks_by_name(runner.checks())

    integrity = evaluations["images_match_sha256"]
    assert not integrity.passed
    assert integrity.metadata["missing"].value == "fox"
    assert integrity.metadata["sha256_mismatch"].value == "tower"
    assert evaluations["one_row_per_prompt"].passed


def test_checks_fail_on_a_missing_row_and_a_foreign_schema(
    runner: Runner, storage_root: Path
) -> None:
    assert runner.prompt_table().success
    assert runner.partition().success
    path = storage_root / "lineage" / f"partition={PARTITION}" / "lineage.parquet"
    table = pq.read_table(path).slice(1).drop_columns(["cost"])
    steps = table.schema.get_field_index("steps")
    table = table.set_column(
        steps, table.schema.field(steps).with_type(pa.int32()), table["steps"].cast(pa.int32())
    )
    pq.write_table(table, path)

    evaluations = checks_by_name(runner.checks())

    completeness = evaluations["one_row_per_prompt"]
    assert not completeness.passed
    assert "missing" in completeness.metadata
    schema = evaluations["lineage_schema_as_declared"]
    assert not schema.passed
    assert set(schema.metadata["differences"].value) == {"cost", "steps"}


def test_generation_metrics_aggregate_every_partition(runner: Runner, storage_root: Path) -> None:
    assert runner.prompt_table().success
    built = {key: runner.partition(key) for key in ("2026-11-20", "2026-11-21")}
    assert all(result.success for result in built.values())

    result = runner.metrics()

    assert result.success, failure_message(result)
    metrics = pd.read_parquet(storage_root / "metrics" / "generation_metrics.parquet")
    assert metrics["partition"].tolist() == ["2026-11-20", "2026-11-21"]
    assert metrics["cached"].tolist() == [0, 1]  # harbor's seed is pinned: day 2 reuses it
    for row, (key, build) in zip(metrics.itertuples(), built.items(), strict=True):
        images = metadata_of(build, "generated_images")
        assert row.http_requests == images["http_requests"], key  # one meaning, both places
    meta = metadata_of(result, "generation_metrics")
    assert meta["dagster/row_count"] == 2
    assert meta["lineage_rows"] == 12
    schema = meta["dagster/column_schema"].columns
    assert [column.name for column in schema] == list(METRIC_COLUMNS)
    assert [column.description for column in schema] == list(METRIC_DESCRIPTIONS.values())
    assert meta["metrics_shown"] == "newest 2 of 2 partitions"
    newest = meta["metrics"].records[0].data
    assert newest["partition"] == "2026-11-21"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", newest["first_submitted_at"])
    assert newest["latency_p50_s"] == round(newest["latency_p50_s"], 3)
    histogram = meta["inference_time_histogram"]
    assert "█" in histogram
    assert sum(int(line.split("|")[2]) for line in histogram.splitlines()[2:]) == 11  # generated


def test_lineage_of_all_partitions_reads_back_as_one_hive_dataset(
    runner: Runner, storage_root: Path
) -> None:
    assert runner.prompt_table().success
    assert runner.partition("2026-11-20").success
    assert runner.partition("2026-11-21").success

    frame = pd.read_parquet(storage_root / "lineage")

    assert len(frame) == 12
    assert set(frame["partition"].astype(str)) == {"2026-11-20", "2026-11-21"}
    for row in frame.itertuples():
        folder = storage_root / "images" / f"partition={row.partition}"
        made = image_id(str(row.backend), str(row.request_key))
        assert re.fullmatch(rf"{row.prompt_id}-{made}\.jpe?g", Path(row.image_uri).name)
        assert Path(row.image_uri).parent == folder

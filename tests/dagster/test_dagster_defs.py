"""The code location loads: asset graph, checks, job, schedule and resources as designed."""

from __future__ import annotations

import importlib
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg
import pytest

from flux_pipeline.definitions import defs


def test_asset_graph_is_prompt_table_to_images_to_metrics() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {
        "prompt_table",
        "generated_images",
        "near_duplicates",
        "generation_metrics",
        "attribute_metrics",
        "account_reconciliation",
    }
    assert graph.get(dg.AssetKey("generated_images")).parent_keys == {dg.AssetKey("prompt_table")}
    after_images = {dg.AssetKey("generated_images"), dg.AssetKey("near_duplicates")}
    assert graph.get(dg.AssetKey("near_duplicates")).parent_keys == {
        dg.AssetKey("generated_images")
    }
    assert graph.get(dg.AssetKey("generation_metrics")).parent_keys == after_images
    assert graph.get(dg.AssetKey("attribute_metrics")).parent_keys == after_images
    images = graph.get(dg.AssetKey("generated_images"))
    assert isinstance(images.partitions_def, dg.DailyPartitionsDefinition)
    assert images.partitions_def.start.strftime("%Y-%m-%d") == "2026-01-01"
    assert graph.get(dg.AssetKey("prompt_table")).partitions_def is None


def test_five_partitioned_checks_guard_generated_images_and_one_near_duplicates() -> None:
    graph = defs.resolve_asset_graph()
    checks = {key.name: key.asset_key.to_user_string() for key in graph.asset_check_keys}
    assert checks == {
        "one_row_per_prompt": "generated_images",
        "images_match_sha256": "generated_images",
        "failure_rate_below_threshold": "generated_images",
        "images_pass_quality": "generated_images",
        "lineage_schema_as_declared": "generated_images",
        "near_duplicate_rate_below_threshold": "near_duplicates",
    }
    images_partitions = graph.get(dg.AssetKey("generated_images")).partitions_def
    for key in graph.asset_check_keys:
        if key.asset_key == dg.AssetKey("generated_images"):
            assert graph.get(key).partitions_def == images_partitions


def test_job_and_stopped_daily_schedule() -> None:
    job = defs.resolve_job_def("synthetic_build")
    assert isinstance(job.partitions_def, dg.DailyPartitionsDefinition)
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == {
        "prompt_table",
        "generated_images",
        # unpartitioned: each partition's run refreshes them over every partition
        "near_duplicates",
        "generation_metrics",
        "attribute_metrics",
    }
    schedule = defs.resolve_schedule_def("synthetic_build_daily")
    assert schedule.job_name == "synthetic_build"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.cron_schedule == "5 0 * * *"


def test_the_stopped_reconciliation_schedule_reconciles_the_day_before() -> None:
    schedule = defs.resolve_schedule_def("account_reconciliation_daily")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "account_reconciliation_job"
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 12, 6, 1, 30, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )
    (request,) = schedule.evaluate_tick(context).run_requests or []
    assert request.partition_key == "2026-12-05"
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("account_reconciliation")).pools == {"segmind"}


def test_the_schedule_builds_the_day_it_runs_on() -> None:
    schedule = defs.resolve_schedule_def("synthetic_build_daily")
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 20, 0, 5, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )

    requests = schedule.evaluate_tick(context).run_requests or []

    assert [request.partition_key for request in requests] == ["2026-11-20"]


def test_descriptions_are_markdown_not_rst() -> None:
    graph = defs.resolve_asset_graph()
    descriptions = {
        key.to_user_string(): graph.get(key).description for key in graph.get_all_asset_keys()
    }
    descriptions.update({key.name: graph.get(key).description for key in graph.asset_check_keys})
    assert all(descriptions.values()), descriptions
    assert not [name for name, text in descriptions.items() if "``" in (text or "")]


def test_asset_descriptions_fit_in_five_lines() -> None:
    """The UI shows an asset's description: its metadata keys are described where emitted."""
    graph = defs.resolve_asset_graph()
    lengths = {
        key.to_user_string(): len((graph.get(key).description or "").strip().splitlines())
        for key in graph.get_all_asset_keys()
    }
    assert all(0 < length <= 5 for length in lengths.values()), lengths


def test_resources_default_to_the_embedded_emulator_and_local_storage() -> None:
    resources = defs.resources or {}
    assert set(resources) == {"segmind", "storage"}
    segmind = resources["segmind"]
    assert segmind.api_key is None
    assert segmind.base_url is None


def _reloaded_resources(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, object]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import flux_pipeline.definitions as module

    try:
        return dict(importlib.reload(module).defs.resources or {})
    finally:
        for name in env:
            monkeypatch.delenv(name)
        importlib.reload(module)


def test_segmind_variables_are_read_at_run_time_never_stored_in_the_definitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resources = _reloaded_resources(
        monkeypatch,
        SEGMIND_API_KEY="SG_feedfacefeedface",
        SEGMIND_BASE_URL="http://127.0.0.1:9/v1",
        FLUX_STORAGE_ROOT="s3://bucket/prefix",
    )
    segmind = resources["segmind"]
    assert (segmind.api_key, segmind.base_url) == (None, None)  # type: ignore[attr-defined]
    assert "SG_feedfacefeedface" not in repr(segmind)
    assert resources["storage"].root == "s3://bucket/prefix"  # type: ignore[attr-defined]

    monkeypatch.setenv("SEGMIND_API_KEY", "SG_feedfacefeedface")
    monkeypatch.setenv("SEGMIND_BASE_URL", "http://127.0.0.1:9/v1")
    config = segmind.engine_config()  # type: ignore[attr-defined]
    assert (config.api_key, config.base_url) == ("SG_feedfacefeedface", "http://127.0.0.1:9/v1")
    assert not segmind.uses_emulator  # type: ignore[attr-defined]


def test_core_modules_do_not_import_dagster() -> None:
    code = (
        "import sys, flux_pipeline.store.storage, flux_pipeline.prompts, "
        "flux_pipeline.store.lineage, "
        "flux_pipeline.builder, flux_pipeline.report.metrics, flux_pipeline.report.contact_sheet, "
        "flux_pipeline.commands.demo; "
        "assert 'dagster' not in sys.modules, 'the core imported dagster'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""A per-run override of any `segmind` field keeps the service the environment names.

Dagster rebuilds a resource from run config alone when a run overrides one of its fields, so
each path a user has for such an override is tried against a "real" service (an emulator on
loopback named by ``SEGMIND_API_KEY`` / ``SEGMIND_BASE_URL``): the CLI's ``-c run.yaml``, the
launchpad's GraphQL mutation, and the daily schedule's run request. Every one must send its
submits there, never start the embedded emulator, and name that service in the metadata.

The key itself never enters run config: each path passes it as ``{env: SEGMIND_API_KEY}``, and
afterwards no file under ``DAGSTER_HOME`` holds it; a literal key on the same path is refused
before a run is created.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from tests.support import forked_cli
from tests.support.dagster_support import KEY, PARTITION, make_resources
from tests.support.secrets import files_containing

#: A per-run override, with the key as the reference run config takes.
SEGMIND_CONFIG = {"max_concurrency": 4, "api_key": {"env": "SEGMIND_API_KEY"}}
OVERRIDE: dict[str, Any] = {"resources": {"segmind": {"config": SEGMIND_CONFIG}}}
#: The key itself in run config: refused by the config schema.
LITERAL: dict[str, Any] = {"resources": {"segmind": {"config": {"api_key": KEY}}}}
DAGSTER = Path(sys.executable).with_name("dagster")
WORKSPACE = Path(__file__).resolve().parents[2] / "workspace.yaml"


@pytest.fixture
def real_service(
    fast_emulator: Any,
    prompts_csv: Path,
    storage_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """The environment of a production code location; the prompt table already stored."""
    monkeypatch.setenv("SEGMIND_API_KEY", KEY)
    monkeypatch.setenv("SEGMIND_BASE_URL", fast_emulator.url)
    monkeypatch.setenv("FLUX_STORAGE_ROOT", str(storage_root))
    from flux_pipeline.assets import prompt_table

    with dg.instance_for_test() as scratch:
        resources = make_resources(fast_emulator.url, str(storage_root))
        assert dg.materialize([prompt_table], resources=resources, instance=scratch).success
    return fast_emulator


def _assert_built_on(service: Any, instance: dg.DagsterInstance, run_id: str) -> None:
    """Six images submitted to ``service``; no embedded emulator; metadata names it."""
    run = instance.get_run_by_id(run_id)
    assert run is not None
    assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
    assert service.stats()["requests"]["submit"] == 6
    logs = "\n".join(entry.user_message for entry in instance.all_logs(run_id))
    assert "EMBEDDED EMULATOR" not in logs
    assert KEY not in logs
    event = instance.get_latest_materialization_event(dg.AssetKey("generated_images"))
    assert event is not None
    assert event.asset_materialization is not None
    assert event.asset_materialization.partition == PARTITION
    metadata = event.asset_materialization.metadata
    assert metadata["backend"].value == service.url
    assert metadata["completed"].value == 6


@pytest.mark.slow
def test_cli_run_config_override_keeps_the_service_from_the_environment(
    real_service: Any, tmp_path: Path
) -> None:
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(
        "resources: {segmind: {config: {max_concurrency: 4, api_key: {env: SEGMIND_API_KEY}}}}\n"
    )
    literal_yaml = tmp_path / "literal.yaml"
    literal_yaml.write_text(f"resources: {{segmind: {{config: {{api_key: {KEY}}}}}}}\n")
    home = tmp_path / "home"
    home.mkdir()
    materialize = [str(DAGSTER), "asset", "materialize", "-m", "flux_pipeline.definitions"]

    def cli(config: Path) -> subprocess.CompletedProcess[str]:
        return forked_cli.run(
            [*materialize, "--select", "generated_images", "--partition", PARTITION, "-c", config],
            env={**os.environ, "DAGSTER_HOME": str(home)},
        )

    refused = cli(literal_yaml)
    assert refused.returncode != 0
    assert "api_key" in refused.stdout + refused.stderr
    assert KEY not in refused.stdout + refused.stderr
    run = cli(run_yaml)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records()
        assert len(records) == 1  # the literal was refused before a run was created
        _assert_built_on(real_service, instance, records[0].dagster_run.run_id)
        assert records[0].dagster_run.run_config == OVERRIDE
    assert files_containing(home, (KEY,)) == []
    assert files_containing(home, ("SEGMIND_API_KEY",))  # the reference is what was stored


@pytest.mark.slow
def test_launchpad_graphql_override_keeps_the_service_from_the_environment(
    real_service: Any,
) -> None:
    from dagster._core.test_utils import wait_for_runs_to_finish
    from dagster_graphql.test.utils import define_out_of_process_context, materialize_assets

    # The launchpad as `dagster dev` runs it, launching at once (no daemon here to dequeue).
    coordinator = {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}
    with (
        dg.instance_for_test(overrides={"run_coordinator": coordinator}) as instance,
        define_out_of_process_context(str(WORKSPACE), None, instance) as context,
    ):
        [refused] = materialize_assets(  # type: ignore[misc]
            context,
            [dg.AssetKey("generated_images")],
            partition_keys=[PARTITION],
            run_config_data=LITERAL,
        )
        invalid = refused.data["launchPipelineExecution"]
        assert invalid["__typename"] == "RunConfigValidationInvalid", invalid
        assert "api_key" in repr(invalid)
        assert instance.get_runs() == []
        [result] = materialize_assets(  # type: ignore[misc]
            context,
            [dg.AssetKey("generated_images")],
            partition_keys=[PARTITION],
            run_config_data=OVERRIDE,
        )
        launched = result.data["launchPipelineExecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        wait_for_runs_to_finish(instance, timeout=180)
        _assert_built_on(real_service, instance, launched["run"]["runId"])
        assert files_containing(Path(instance.root_directory), (KEY,)) == []


@pytest.mark.slow
def test_schedule_run_request_with_override_keeps_the_service_from_the_environment(
    real_service: Any,
) -> None:
    import importlib

    import flux_pipeline.definitions as module

    defs = importlib.reload(module).defs  # resources as the code location builds them
    schedule = defs.get_schedule_def("synthetic_build_daily")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=_tick_of(PARTITION),
        )
        [request] = list(schedule.evaluate_tick(context).run_requests or [])
        assert request.partition_key == PARTITION
        job = defs.resolve_job_def("synthetic_build")
        with pytest.raises(dg.DagsterInvalidConfigError, match="api_key") as refused:
            job.execute_in_process(
                run_config={**request.run_config, **LITERAL},
                partition_key=request.partition_key,
                instance=instance,
            )
        assert KEY not in str(refused.value)
        assert instance.get_runs() == []
        result = job.execute_in_process(
            run_config={**request.run_config, **OVERRIDE},
            partition_key=request.partition_key,
            instance=instance,
            raise_on_error=False,
        )
        _assert_built_on(real_service, instance, result.run_id)
        assert files_containing(Path(instance.root_directory), (KEY,)) == []


def _tick_of(partition: str) -> Any:
    """The daily schedule builds the current day (end_offset=1): its tick at 00:05 UTC."""
    from datetime import UTC, datetime, timedelta

    return datetime.fromisoformat(partition).replace(tzinfo=UTC) + timedelta(minutes=5)

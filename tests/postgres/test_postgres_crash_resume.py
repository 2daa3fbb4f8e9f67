"""SIGKILL a ``dagster asset materialize`` whose instance is ``deploy/dagster.yaml`` on Postgres, in
the middle of a partition; running it again resumes from the ledger, as on SQLite
(tests/reliability/test_crash_resume.py, whose helpers this reuses)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from flux_pipeline.store.storage import ObjectStore
from tests.support.loopback import TEST_KEY
from tests.support.postgres_server import PostgresHome
from tests.support.reliability_support import (
    PARTITION,
    Materialization,
    audit_killed,
    audit_resumed,
    materialize_in_process,
    table_requests,
    wait_for_mid_build,
    write_table,
)

PROMPTS = 32


def build_prompt_table(instance: dg.DagsterInstance, root: Path) -> None:
    from flux_pipeline.assets import prompt_table
    from flux_pipeline.resources import ObjectStoreResource

    resources = {"storage": ObjectStoreResource(root=str(root))}
    assert dg.materialize([prompt_table], resources=resources, instance=instance).success


@pytest.mark.slow
def test_a_run_killed_mid_partition_on_postgres_resumes_without_paying_twice(
    pg_home: PostgresHome,
    emulator_factory: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu = emulator_factory(workers=4, step_time=0.1)
    table = write_table(tmp_path / "prompts.csv", PROMPTS)
    root = tmp_path / "data"
    monkeypatch.setenv("FLUX_PROMPTS", str(table))
    env = {
        **pg_home.env,
        "FLUX_STORAGE_ROOT": str(root),
        "FLUX_PROMPTS": str(table),
        "SEGMIND_API_KEY": TEST_KEY,
        "SEGMIND_BASE_URL": emu.url,
    }
    requests = {r.request_key: r for r in table_requests(table, PARTITION)}
    keys = set(requests)
    store = ObjectStore.from_uri(str(root))
    with pg_home.instance() as instance:
        build_prompt_table(instance, root)

    run = Materialization(env, tmp_path, "--select", "generated_images", "--partition", PARTITION)
    wait_for_mid_build(run, store, keys)
    run.kill_group()

    killed = audit_killed(emu, store, keys)

    with pg_home.instance() as instance:
        # The killed run is in Postgres as its process left it: started, never finished.
        (killed_run,) = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": PARTITION}))
        assert killed_run.status == dg.DagsterRunStatus.STARTED
        rerun = materialize_in_process(instance, emu.url, root)
        assert rerun.success
        checks = rerun.get_asset_check_evaluations()
        assert len(checks) == 5
        assert all(check.passed for check in checks)
        latest = instance.get_latest_materialization_event(dg.AssetKey("generated_images"))
        assert latest is not None
        assert latest.run_id == rerun.run_id

    audit_resumed(emu, store, requests, killed)

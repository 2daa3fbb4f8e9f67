"""One machine (``deploy/local/dagster.yaml``, the instance of ``make ui``): a backfill's whole
Dagster process tree (daemon, code server, run worker) is SIGKILLed mid-build and the daemon is
started again; the backfill finishes by itself, pays at most the unavoidable window twice, and
the sensor never fails the runs that are alive.

Dagster's loops: the real ``dagster-daemon`` on the shipped instance, unchanged (queue polled
every second; the 30 s backfill loop is waited out once, for the final status after the
restart), because what is tested is what ``make ui`` runs after a crash. Under xdist this test
starts first and its waits overlap the rest of the suite (tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from flux_pipeline.store.storage import ObjectStore
from tests.support.daemon_support import DaemonHome
from tests.support.loopback import TEST_KEY
from tests.support.recovery_support import (
    LOCAL_DAGSTER_YAML,
    PARTITIONS,
    PER_RUN,
    all_runs,
    audit_killed,
    audit_runs,
    audit_whole,
    kill_group,
    requests_by_partition,
    scenario_env,
    wait_for_mid_build,
    write_table,
)


@pytest.mark.slow
def test_a_killed_backfill_finishes_by_itself_after_the_daemon_restarts(
    tmp_path: Path, emulator_factory: Callable[..., Any]
) -> None:
    emulator = emulator_factory(workers=2, step_time=0.3)
    table = write_table(tmp_path / "prompts.csv")
    root = tmp_path / "data"
    env = scenario_env(str(root), table, emulator.url, TEST_KEY)
    store = ObjectStore.from_uri(str(root))
    dagster_yaml = LOCAL_DAGSTER_YAML.read_text()
    with DaemonHome(tmp_path / "home", dagster_yaml=dagster_yaml, env=env) as home:
        from flux_pipeline.assets import prompt_table
        from flux_pipeline.resources import ObjectStoreResource

        instance = home.instance()
        storage = {"storage": ObjectStoreResource(root=str(root))}
        assert dg.materialize([prompt_table], resources=storage, instance=instance).success
        backfill_id = home.launch_backfill("generated_images", PARTITIONS)

        with home.daemon() as daemon:
            wait_for_mid_build(store, lambda: daemon.poll() is None)
            kill_group(daemon)
        killed = audit_killed(emulator, store)
        (started,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))

        restarted = time.monotonic()
        with home.daemon():
            outcome = home.wait_for_backfill(backfill_id)
        print(f"restart -> backfill {outcome.status}: {time.monotonic() - restarted:.1f} s")

        assert outcome.status == "COMPLETED_SUCCESS"
        runs = all_runs(instance, backfill_id)
        assert len(runs) == -(-len(PARTITIONS) // PER_RUN) + 1  # 2 runs and one retry
        assert audit_runs(instance, runs).run_id == started.run_id
    submits = emulator.stats()["jobs"]["by_request_key"]
    audit_whole(store, requests_by_partition(table), killed, submits)

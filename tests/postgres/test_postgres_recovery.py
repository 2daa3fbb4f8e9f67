"""The team layout of ``deploy/docker-compose.yaml`` as processes: Postgres with
``deploy/dagster.yaml`` unchanged, the code location as ``dagster code-server start`` (it alone
holds the Segmind and S3 settings and launches the runs), a daemon loading it over gRPC, and an
S3 root on ``moto_server``. The code server's process tree (with the run worker) is SIGKILLed
mid-build and started again, as compose's ``restart: on-failure`` would; the backfill finishes by
itself. The real daemon's loops are waited on (no private API: this is the team deployment as
it runs), overlapped with the rest of the suite under xdist."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from flux_pipeline.store.storage import ObjectStore
from tests.support.daemon_support import DaemonHome
from tests.support.loopback import TEST_KEY, free_port
from tests.support.postgres_server import DEPLOY_DAGSTER_YAML, PostgresHome
from tests.support.recovery_support import (
    PARTITIONS,
    PER_RUN,
    all_runs,
    audit_killed,
    audit_runs,
    audit_whole,
    code_server,
    grpc_workspace,
    kill_group,
    moto_process,
    requests_by_partition,
    scenario_env,
    wait_for_grpc,
    wait_for_mid_build,
    write_table,
)

BUCKET = "flux-recovery"
COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "docker-compose.yaml"


def _compose_daemon_env() -> dict[str, str]:
    """The daemon service's environment in compose, but its Postgres settings (the test's)."""
    environment = yaml.safe_load(COMPOSE.read_text())["services"]["daemon"]["environment"]
    return {k: str(v) for k, v in environment.items() if not k.startswith("DAGSTER_PG_")}


@pytest.mark.slow
def test_a_killed_code_server_on_postgres_and_s3_finishes_its_backfill_by_itself(
    pg_home: PostgresHome,
    tmp_path: Path,
    emulator_factory: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator = emulator_factory(workers=2, step_time=0.3)
    table = write_table(tmp_path / "prompts.csv")
    root = f"s3://{BUCKET}/data"
    with moto_process(tmp_path / "moto.log") as endpoint:
        aws = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        for name, value in {**aws, "FLUX_PROMPTS": str(table)}.items():
            monkeypatch.setenv(name, value)
        store = ObjectStore.from_uri(root)
        store.fs.mkdir(BUCKET)
        pg = {name: value for name, value in pg_home.env.items() if name.startswith("DAGSTER_PG_")}
        # The webserver and the daemon of compose hold neither Segmind nor S3 settings; the
        # daemon holds the rest of its compose environment.
        bare = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("AWS_", "SEGMIND_", "FLUX_"))
        }
        bare |= _compose_daemon_env()
        port = free_port()
        home = DaemonHome(
            tmp_path / "home",
            dagster_yaml=DEPLOY_DAGSTER_YAML.read_text(),
            env=pg,
            workspace_yaml=grpc_workspace(port),
            daemon_base_env=bare,
        )
        code_env = {
            **os.environ,
            **pg,
            **aws,
            **scenario_env(root, table, emulator.url, TEST_KEY),
            "DAGSTER_HOME": str(home.path),
        }
        with home:
            assert (home.path / "dagster.yaml").read_bytes() == DEPLOY_DAGSTER_YAML.read_bytes()
            from flux_pipeline.assets import prompt_table
            from flux_pipeline.resources import ObjectStoreResource

            instance = home.instance()
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            resources = {"storage": ObjectStoreResource(root=root)}
            assert dg.materialize([prompt_table], resources=resources, instance=instance).success
            backfill_id = home.launch_backfill("generated_images", PARTITIONS)

            server = code_server(port, code_env, tmp_path / "code.log")
            try:
                wait_for_grpc(port, server)
                with home.daemon():
                    wait_for_mid_build(store, lambda: server.poll() is None)
                    kill_group(server)
                    killed = audit_killed(emulator, store)
                    restarted = time.monotonic()
                    server = code_server(port, code_env, tmp_path / "code.log")
                    outcome = home.wait_for_backfill(backfill_id)
                    seconds = time.monotonic() - restarted
                    print(f"restart -> backfill {outcome.status}: {seconds:.1f} s")
            finally:
                kill_group(server)

            assert outcome.status == "COMPLETED_SUCCESS"
            runs = all_runs(instance, backfill_id)
            assert len(runs) == -(-len(PARTITIONS) // PER_RUN) + 1  # 2 runs and one retry
            audit_runs(instance, runs)
        submits = emulator.stats()["jobs"]["by_request_key"]
        audit_whole(store, requests_by_partition(table), killed, submits)

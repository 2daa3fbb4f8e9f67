"""``deploy/dagster.yaml`` on a real Postgres: the instance it describes, the driver trap it
avoids, and a second process that sees what the first one stored."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from tests.support.dagster_support import key_from_env
from tests.support.loopback import TEST_KEY
from tests.support.postgres_server import DEPLOY_DAGSTER_YAML, PostgresHome

PARTITIONS = ("2026-11-20", "2026-11-21")
TABLE = """prompt_id,prompt,steps,aspect_ratio
fox,A red fox in fresh snow,2,1:1
harbor,Fishing boats in a foggy harbor,1,16:9
tower,A glass tower under storm clouds,3,9:16
"""

#: Runs in a separate Python process: what a webserver or daemon on another machine would see.
READER = """
import json
import dagster as dg

with dg.DagsterInstance.get() as instance:
    key = dg.AssetKey("generated_images")
    records = instance.fetch_materializations(key, limit=100).records
    print(json.dumps({
        "storage": type(instance.run_storage).__name__,
        "runs": {run.run_id: run.status.value for run in instance.get_runs()},
        "materializations": sorted(
            [r.run_id, r.partition_key, r.asset_materialization.metadata["completed"].value]
            for r in records
        ),
        "partitions": sorted(instance.get_materialized_partitions(key)),
    }))
"""


def materialize(
    instance: dg.DagsterInstance, url: str, root: Path, selection: str, partition: str | None
) -> dg.ExecuteInProcessResult:
    from flux_pipeline.assets import generated_images, prompt_table
    from flux_pipeline.resources import ObjectStoreResource, SegmindResource

    return dg.materialize(
        [prompt_table, generated_images],
        selection=[selection],
        partition_key=partition,
        resources={
            "segmind": SegmindResource(api_key=key_from_env(TEST_KEY), base_url=url),
            "storage": ObjectStoreResource(root=str(root)),
        },
        instance=instance,
    )


def test_the_instance_is_the_deploy_file_on_postgres(pg_home: PostgresHome) -> None:
    assert (pg_home.path / "dagster.yaml").read_bytes() == DEPLOY_DAGSTER_YAML.read_bytes()
    with pg_home.instance() as instance:
        for storage in (instance.run_storage, instance.event_log_storage):
            url = storage._engine.url  # type: ignore[attr-defined]
            assert (url.drivername, url.port) == ("postgresql+psycopg2", pg_home.server.port)
            assert url.database == pg_home.env["DAGSTER_PG_DB"]
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "PoolQueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.run_queue_config is not None
        assert concurrency.run_queue_config.max_concurrent_runs == 4
        assert not instance.telemetry_enabled
        assert instance.run_monitoring_enabled
        assert instance.run_retries_enabled
        assert instance.run_retries_max_retries == 2


def test_a_bare_postgresql_url_needs_psycopg3_the_explicit_scheme_does_not(
    pg_home: PostgresHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3, which the project does not install
    (and with which dagster-postgres 0.29.27's ``NOTIFY run_events, $1`` is a syntax error)."""
    import sqlalchemy

    assert sqlalchemy.engine.make_url("postgresql://h/db").get_dialect().driver == "psycopg"
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as on a machine without psycopg 3
    bare = tmp_path / "bare_home"
    bare.mkdir()
    text = DEPLOY_DAGSTER_YAML.read_text()
    assert "      scheme: postgresql+psycopg2\n" in text
    (bare / "dagster.yaml").write_text(text.replace("      scheme: postgresql+psycopg2\n", ""))
    with pytest.raises(ImportError, match="psycopg"):
        dg.DagsterInstance.from_config(str(bare)).dispose()

    @dg.asset
    def stored_event() -> int:
        return 1

    with pg_home.instance() as instance:
        # The event log's store_event sends the NOTIFY; psycopg2 binds it on the client side.
        result = dg.materialize([stored_event], instance=instance)
        assert result.success
        assert instance.get_latest_materialization_event(dg.AssetKey("stored_event"))


def test_a_second_process_sees_runs_and_materializations(
    pg_home: PostgresHome, emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = tmp_path / "prompts.csv"
    table.write_text(TABLE)
    monkeypatch.setenv("FLUX_PROMPTS", str(table))
    root = tmp_path / "data"
    with pg_home.instance() as instance:
        results = [materialize(instance, emulator.url, root, "prompt_table", None)]
        results += [
            materialize(instance, emulator.url, root, "generated_images", partition)
            for partition in PARTITIONS
        ]
    assert all(result.success for result in results)

    env = {**pg_home.env, "FLUX_PROMPTS": str(table)}
    reader = subprocess.run(
        [sys.executable, "-c", READER],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert reader.returncode == 0, reader.stderr[-3000:]
    seen = json.loads(reader.stdout.strip().splitlines()[-1])
    assert seen["storage"] == "PostgresRunStorage"
    assert seen["runs"] == {result.run_id: "SUCCESS" for result in results}
    built = zip(results[1:], PARTITIONS, strict=True)
    assert seen["materializations"] == sorted([run.run_id, key, 3] for run, key in built)
    assert seen["partitions"] == list(PARTITIONS)


def test_processes_racing_to_create_a_pool_s_limit_row_all_succeed(pg_home: PostgresHome) -> None:
    """The sensor and the run queue create a pool's limit row when it is missing, and on
    Postgres two of them can insert it at once (a backfill once made a run too many from that).
    Racing threads, each with an instance of its own, create 20 pools' rows: none fails, and
    every row is there (whoever made it)."""
    from flux_pipeline.assets.dagster_internals import create_missing_pool_limits

    pools = [f"race-{n}" for n in range(20)]
    racers = 4
    start = threading.Barrier(racers)

    def race() -> list[str]:
        with pg_home.instance() as instance:
            created = []
            for pool in pools:
                start.wait(timeout=60)
                created += create_missing_pool_limits(instance, [pool])
            return created

    with pg_home.instance() as instance:  # the schema, made once before the race
        with ThreadPoolExecutor(racers) as pool_of_racers:
            results = list(pool_of_racers.map(lambda _: race(), range(racers)))

        assert {pool for created in results for pool in created} == set(pools)
        assert set(pools) <= instance.event_log_storage.get_concurrency_keys()

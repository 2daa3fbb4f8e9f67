"""The daemon-driven asset backfill of the backfill suite (tests/daemon/test_daemon_backfill.py),
run unchanged on ``deploy/dagster.yaml`` and Postgres instead of SQLite: the same harness
(``DaemonHome``), the same scenario and assertions, only the instance differs. Like it, it waits
on the real daemon's loops (no private API), overlapped with the rest of the suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.test_daemon_backfill import Setup, scenario_env
from tests.daemon.test_daemon_backfill import (
    test_a_daemon_backfill_packs_partitions_into_runs_and_running_it_again_is_free as scenario,
)
from tests.support.daemon_support import DaemonHome
from tests.support.postgres_server import DEPLOY_DAGSTER_YAML, PostgresHome


@pytest.fixture
def postgres_setup(
    pg_home: PostgresHome, tmp_path: Path, emulator_factory: Callable[..., Any]
) -> Iterator[Setup]:
    """The backfill suite's daemon home, on ``deploy/dagster.yaml`` as committed and a fresh
    Postgres database named by the ``DAGSTER_PG_*`` variables."""
    emulator, env = scenario_env(tmp_path, emulator_factory)
    env.update(
        {name: value for name, value in pg_home.env.items() if name.startswith("DAGSTER_PG_")}
    )
    dagster_yaml = DEPLOY_DAGSTER_YAML.read_text()
    with DaemonHome(tmp_path / "daemon_home", dagster_yaml=dagster_yaml, env=env) as home:
        yield Setup(home, emulator)


@pytest.mark.slow
def test_the_daemon_backfill_passes_on_postgres(postgres_setup: Setup, tmp_path: Path) -> None:
    home = postgres_setup.home
    assert type(home.instance().run_storage).__name__ == "PostgresRunStorage"
    assert (home.path / "dagster.yaml").read_bytes() == DEPLOY_DAGSTER_YAML.read_bytes()
    scenario(postgres_setup, tmp_path)

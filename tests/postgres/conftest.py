"""Fixtures of the Postgres suite: one real server per session, a fresh database per test, and a
``DAGSTER_HOME`` holding ``deploy/dagster.yaml`` unchanged, configured through ``DAGSTER_PG_*``."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres_server import (
    DEPLOY_DAGSTER_YAML,
    PostgresHome,
    PostgresServer,
    running_postgres,
)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_home(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> PostgresHome:
    """``deploy/dagster.yaml`` copied as is into a temporary ``DAGSTER_HOME`` whose database is
    new; the variables are set in this process and returned for subprocesses."""
    database = f"dagster_{uuid.uuid4().hex[:12]}"
    postgres.create_database(database)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(DEPLOY_DAGSTER_YAML, home / "dagster.yaml")
    variables = {**postgres.dagster_env(), "DAGSTER_PG_DB": database, "DAGSTER_HOME": str(home)}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return PostgresHome(home, {**os.environ, **variables}, postgres)

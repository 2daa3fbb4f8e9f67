"""Why the shipped instances use ``PoolQueuedRunCoordinator``: Dagster 1.13.27's run queue lets
every queued run of a pool it has never seen through in one pass, whatever ``default_limit``
says; with the pool's row created at submission, the same pass lets one through."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from flux_pipeline.assets.run_queue import PoolQueuedRunCoordinator
from flux_pipeline.assets.segmind_pool import SEGMIND_POOL

LOCAL_YAML = Path(__file__).resolve().parents[2] / "deploy" / "local" / "dagster.yaml"
STOCK = ("flux_pipeline.assets.run_queue", "PoolQueuedRunCoordinator")


@dg.op(pool=SEGMIND_POOL)
def talks_to_segmind() -> None:
    """A step of the pool."""


@dg.job
def pooled() -> None:
    talks_to_segmind()


def _origin() -> RemoteJobOrigin:
    """Where the queue thinks the runs come from (queued runs need one; nothing loads it)."""
    location = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(python_file=__file__), location_name="test"
    )
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), "pooled")


def _queue(instance: dg.DagsterInstance) -> dg.DagsterRun:
    run = instance.create_run_for_job(pooled, remote_job_origin=_origin())
    instance.run_coordinator.submit_run(dg.SubmitRunContext(run, workspace=None))  # type: ignore[arg-type]
    return run


def _first_pass(home: Path, dagster_yaml: str) -> int:
    """Queue 3 runs of the pool on a fresh instance; how many the queue's first pass takes."""
    home.mkdir()
    (home / "dagster.yaml").write_text(dagster_yaml)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for _ in range(3):
            _queue(instance)
        daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
        config = instance.get_concurrency_config()
        return len(daemon._get_runs_to_dequeue(instance, config, fixed_iteration_time=None))


@pytest.mark.parametrize("coordinator", ["shipped", "dagster's own"])
def test_the_first_dequeue_pass_honours_the_pool_limit_only_with_the_shipped_queue(
    tmp_path: Path, coordinator: str
) -> None:
    dagster_yaml = LOCAL_YAML.read_text()
    if coordinator == "shipped":
        assert all(part in dagster_yaml for part in STOCK)
        assert _first_pass(tmp_path / "home", dagster_yaml) == 1  # the pool's limit
    else:
        stock = dagster_yaml.replace(STOCK[0], "dagster.core.run_coordinator").replace(
            STOCK[1], "QueuedRunCoordinator"
        )
        assert _first_pass(tmp_path / "home", stock) == 3  # every run at once (Dagster's bug)


def test_the_shipped_queue_is_dagsters_with_the_pool_row_made_at_submission(
    tmp_path: Path,
) -> None:
    shutil.copy(LOCAL_YAML, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_coordinator, PoolQueuedRunCoordinator)
        assert SEGMIND_POOL not in instance.event_log_storage.get_concurrency_keys()
        run = _queue(instance)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.QUEUED  # type: ignore[union-attr]
        assert instance.event_log_storage.get_concurrency_info(SEGMIND_POOL).slot_count == 1

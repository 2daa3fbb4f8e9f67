"""The ``flux_dead_runs`` sensor on runs of its code location in a real instance: a run whose
heartbeat lives is left alone however long it runs; a run whose worker pid is gone, or that
never wrote a heartbeat, is failed with the reason; runs of other locations are not its to judge."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from flux_pipeline.assets import flux_dead_runs, run_monitor
from flux_pipeline.resources import ObjectStoreResource
from flux_pipeline.store.layout import heartbeat_path
from flux_pipeline.store.process_identity import this_process
from flux_pipeline.store.run_heartbeat import Heartbeat, RunHeartbeat
from flux_pipeline.store.storage import ObjectStore


@dg.op
def step() -> None:
    """Never executed: the runs are only recorded."""


@dg.job
def some_job() -> None:
    step()


def _location(name: str) -> InProcessCodeLocationOrigin:
    return InProcessCodeLocationOrigin(
        LoadableTargetOrigin(python_file=__file__), location_name=name
    )


def _started_run(instance: dg.DagsterInstance, location: str) -> dg.DagsterRun:
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(_location(location), "__repository__"), "j")
    run = instance.create_run_for_job(some_job, remote_job_origin=origin)
    started = DagsterEvent(DagsterEventType.RUN_START.value, job_name=run.job_name)
    instance.report_dagster_event(started, run_id=run.run_id)
    return run


def _tick(instance: dg.DagsterInstance, root: Path) -> str:
    context = dg.SensorEvaluationContext(
        instance_ref=None,
        last_tick_completion_time=None,
        last_run_key=None,
        cursor=None,
        repository_name=None,
        instance=instance,
        code_location_origin=_location("flux_pipeline"),
        resources={"storage": ObjectStoreResource(root=str(root))},
    )
    with context:
        result = flux_dead_runs(context)
    assert isinstance(result, dg.SkipReason)
    return str(result.skip_message)


def _status(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRunStatus:
    found = instance.get_run_by_id(run.run_id)
    assert found is not None
    return found.status


def test_live_runs_are_left_alone_and_dead_ones_failed_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUX_RUN_LEASE", "0.4")
    monkeypatch.setattr(run_monitor, "NO_HEARTBEAT_GRACE", 0.0)
    store = ObjectStore.from_uri(str(tmp_path / "data"))
    with dg.instance_for_test() as instance:
        alive = _started_run(instance, "flux_pipeline")
        beat = RunHeartbeat(store, alive.run_id)
        beat.start()
        dead = _started_run(instance, "flux_pipeline")
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        host, scope, _ = this_process()
        now = datetime.now(UTC)
        fresh = Heartbeat(dead.run_id, host, scope, child.pid, now, now, 120.0)  # its pid is gone
        store.write_atomic(heartbeat_path(dead.run_id), fresh.to_json())
        silent = _started_run(instance, "flux_pipeline")  # never wrote a heartbeat
        other = _started_run(instance, "another_location")  # not this sensor's to judge
        for _ in range(4):  # ten leases: the live run keeps renewing
            summary = _tick(instance, tmp_path / "data")
            time.sleep(1.0)
        beat.stop()

        assert _status(instance, alive) == dg.DagsterRunStatus.STARTED
        assert _status(instance, other) == dg.DagsterRunStatus.STARTED
        assert _status(instance, dead) == dg.DagsterRunStatus.FAILURE
        assert _status(instance, silent) == dg.DagsterRunStatus.FAILURE
        (failure,) = instance.all_logs(dead.run_id, of_type=DagsterEventType.RUN_FAILURE)
        assert f"its worker process (pid {child.pid}" in (failure.message or "")
        (failure,) = instance.all_logs(silent.run_id, of_type=DagsterEventType.RUN_FAILURE)
        assert "never wrote a heartbeat" in (failure.message or "")
        assert "0 dead run(s) failed" in summary  # the last tick: nothing left to fail

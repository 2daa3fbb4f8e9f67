"""``flux_dead_runs``: a sensor of this code location that fails the runs whose worker is dead.

Dagster's run monitoring asks the run launcher whether a worker lives, and the
``DefaultRunLauncher`` (``dagster dev``, a code server launching its runs) cannot tell: a killed
run would stay ``STARTED`` for ever, and its backfill with it. This sensor reads each ``STARTED``
run's heartbeat in the store (:mod:`flux_pipeline.store.run_heartbeat`) and fails the run, saying
why, when its worker is gone; the failure is a run failure, so ``run_retries`` resume it from
the ledger. When a run counts as dead: docs/OPERATIONS.md ("Recovery"). Each tick also creates
the ``segmind`` pool's limit row if the instance has none (see
:mod:`flux_pipeline.assets.run_queue`) and deletes the heartbeats of ended runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from flux_pipeline.assets.dagster_internals import create_missing_pool_limits
from flux_pipeline.assets.segmind_pool import SEGMIND_POOL
from flux_pipeline.resources.storage import ObjectStoreResource
from flux_pipeline.settings.environment import FLUX_RUN_MONITOR_INTERVAL
from flux_pipeline.store.layout import RUNS_DIR, heartbeat_path
from flux_pipeline.store.run_heartbeat import dead_because, lease_from_env, read_heartbeat
from flux_pipeline.store.storage import ObjectStore

#: Seconds between two ticks (``FLUX_RUN_MONITOR_INTERVAL``), read when the location loads.
MONITOR_INTERVAL = FLUX_RUN_MONITOR_INTERVAL.read()
#: Least seconds a STARTED run may go without ever writing a heartbeat (its worker writes the
#: first one when it sets up its resources, a second or so after the run starts).
NO_HEARTBEAT_GRACE = 60.0


def _dead_runs(
    instance: dg.DagsterInstance, store: ObjectStore, location: str, now: datetime
) -> tuple[dict[str, str], list[str]]:
    """``{run id: why it is dead}`` among the STARTED runs of ``location``, and what could not
    be judged (unreadable heartbeats: never taken for dead)."""
    dead, unjudged = {}, []
    grace = timedelta(seconds=max(2 * lease_from_env(), NO_HEARTBEAT_GRACE))
    records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    for record in records:
        run = record.dagster_run
        origin = run.remote_job_origin
        if origin is None or origin.location_name != location:
            continue
        try:
            heartbeat = read_heartbeat(store, run.run_id)
        except Exception as exc:  # unreadable or unreachable: not evidence of death
            unjudged.append(f"{run.run_id}: {exc}")
            continue
        if heartbeat is not None:
            reason = dead_because(heartbeat, now)
        elif record.start_time is not None and now - _utc(record.start_time) > grace:
            reason = (
                f"it has been STARTED for {(now - _utc(record.start_time)).total_seconds():.0f} "
                f"s and never wrote a heartbeat ({store.uri(heartbeat_path(run.run_id))})"
            )
        else:
            reason = None
        if reason is not None:
            dead[run.run_id] = reason
    return dead, unjudged


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _forget_ended(instance: dg.DagsterInstance, store: ObjectStore, now: datetime) -> int:
    """Delete the heartbeats of runs that have ended, and the dead ones of runs this instance
    does not know (e.g. a shell's run on a throw-away instance)."""
    run_ids = [p.removeprefix(f"{RUNS_DIR}/").removesuffix(".json") for p in store.list(RUNS_DIR)]
    if not run_ids:
        return 0
    found = {r.run_id: r for r in instance.get_runs(dg.RunsFilter(run_ids=run_ids))}
    forgotten = 0
    for run_id in run_ids:
        if run_id in found:
            ended = found[run_id].is_finished
        else:
            try:
                heartbeat = read_heartbeat(store, run_id)
            except ValueError:
                continue
            ended = heartbeat is not None and dead_because(heartbeat, now) is not None
        if ended:
            store.delete(heartbeat_path(run_id))
            forgotten += 1
    return forgotten


@dg.sensor(
    name="flux_dead_runs",
    minimum_interval_seconds=MONITOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Fails the STARTED runs of this code location whose worker is dead (its heartbeat in "
        "the store lapsed, or its process is gone on this machine), so that run retries resume "
        "them; never a run that still renews its heartbeat."
    ),
)
def flux_dead_runs(
    context: dg.SensorEvaluationContext, storage: ObjectStoreResource
) -> dg.SkipReason:
    """Fail dead runs of this location (see the module); the tick's summary says what it did."""
    instance = context.instance
    created = create_missing_pool_limits(instance, [SEGMIND_POOL])
    origin = context.code_location_origin
    if origin is None:
        return dg.SkipReason("no code location origin: nothing to judge")
    store = storage.store()
    dead, unjudged = _dead_runs(instance, store, origin.location_name, datetime.now(UTC))
    for run_id, reason in dead.items():
        run = instance.get_run_by_id(run_id)
        if run is None or run.status != dg.DagsterRunStatus.STARTED:
            continue
        then = (
            "Run retries (run_retries in dagster.yaml) resume it from the ledger"
            if instance.run_retries_enabled
            else "Re-run it (this instance has no run_retries): it resumes from the ledger"
        )
        message = (
            f"Run {run_id} marked failed by the sensor flux_dead_runs: {reason}. {then} "
            "without paying twice for the jobs in flight."
        )
        context.log.warning(message)
        instance.report_run_failed(run, message)
    try:
        forgotten = _forget_ended(instance, store, datetime.now(UTC))
    except Exception as exc:  # a cleanup never fails the tick
        forgotten = 0
        unjudged.append(f"could not delete ended runs' heartbeats: {exc}")
    parts = [f"{len(dead)} dead run(s) failed"]
    if created:
        parts.append(f"pool limit rows created: {', '.join(created)}")
    if unjudged:
        parts.append(f"not done: {'; '.join(unjudged)}")
    if forgotten:
        parts.append(f"{forgotten} heartbeat(s) of ended runs deleted")
    return dg.SkipReason("; ".join(parts))

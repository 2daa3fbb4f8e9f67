"""The run queue of both shipped instances: Dagster's ``QueuedRunCoordinator``, with each run's
pools made known to the instance before the run is queued.

Why: in Dagster 1.13.27 a pool that has never been used has no row in the instance's limits
table, and the queue daemon's pass (``QueuedRunCoordinatorDaemon._get_runs_to_dequeue``) reads the
configured pools *before* it creates the missing rows at ``default_limit``; for the rest of that
pass the new pool counts as unlimited. So the first pass that meets the ``segmind`` pool (a fresh
instance, e.g. the first backfill) launches every queued run of it at once, up to
``max_concurrent_runs``, whatever ``default_limit`` says. Creating the pool's row when a run is
submitted, before any pass can see the run, closes that window; later passes already hold runs
back correctly. Instances that keep Dagster's own class (the Helm chart, whose daemon image does
not hold this package) get the row from the ``flux_dead_runs`` sensor's ticks, or once by hand:
``dagster instance concurrency set segmind 1``.
"""

from __future__ import annotations

import dagster as dg

from flux_pipeline.assets.dagster_internals import (
    coordinator_instance,
    create_missing_pool_limits,
    run_pools,
)


class PoolQueuedRunCoordinator(dg.QueuedRunCoordinator):
    """``QueuedRunCoordinator`` that creates the limit row of each pool of a run before queueing
    it (configured exactly like ``QueuedRunCoordinator``)."""

    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        pools = run_pools(context.dagster_run)
        if pools:
            create_missing_pool_limits(coordinator_instance(self), pools)
        return super().submit_run(context)

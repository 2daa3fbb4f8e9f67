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

from collections.abc import Iterable

import dagster as dg
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.dagster_run import DagsterRun


class PoolQueuedRunCoordinator(QueuedRunCoordinator):
    """``QueuedRunCoordinator`` that creates the limit row of each pool of a run before queueing
    it (configured exactly like ``QueuedRunCoordinator``)."""

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        concurrency = context.dagster_run.run_op_concurrency
        if concurrency is not None and concurrency.all_pools:
            know_pools(self._instance, concurrency.all_pools)
        return super().submit_run(context)


def know_pools(instance: dg.DagsterInstance, pools: Iterable[str]) -> list[str]:
    """Create the missing limit rows of ``pools`` at the instance's ``default_limit``; returns
    the pools created."""
    storage = instance.event_log_storage
    if instance.global_op_concurrency_default_limit is None:
        return []
    missing = sorted(set(pools) - storage.get_concurrency_keys())
    return [pool for pool in missing if storage.initialize_concurrency_limit_to_default(pool)]

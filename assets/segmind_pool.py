"""The Dagster pool ``segmind`` and each run's share of the account's quota.

Every run that builds images holds one slot of the pool ``segmind`` while its build step runs
(Dagster's own pool machinery: the run queue or the step waits for a free slot). A Segmind quota
belongs to the account, so runs holding slots together must stay within its
``requests_per_minute``. The mechanism is a **static share per slot**: each run paces itself at
``requests_per_minute / slots``, where ``slots`` is the pool's limit read from the instance.
Why this one: it needs nothing shared between runs but the instance configuration they already
read (no lock, no counter in storage, no scheduler of our own), it can never exceed the quota
however the runs overlap, and runs are long (a backfill run builds up to a month of partitions),
so a slot is rarely idle. Its cost: a run alone in the pool still paces at its share; give the
pool as many slots as runs you want at once, and each run its share.

``slots`` is the pool's limit: ``concurrency: pools: default_limit: N`` in ``dagster.yaml``, or
``dagster instance concurrency set segmind N``. A pool without a limit bounds nothing, so there
is no honest share to take: the run then paces at the whole ``requests_per_minute`` (one slot,
right for a lone run such as the demo) and says in its log that concurrent runs may exceed the
quota until the pool gets a limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from flux_pipeline.assets.dagster_internals import pool_limit
from flux_pipeline.segmind import EngineConfig

#: The pool of every step that sends requests to Segmind.
SEGMIND_POOL = "segmind"


@dataclass(frozen=True)
class PoolShare:
    """How many runs may share the account at once, and what said so."""

    slots: int
    source: str
    #: False when the pool has no limit (nothing bounds the runs sharing the account).
    limited: bool = True


def pool_share(instance: dg.DagsterInstance, pool: str = SEGMIND_POOL) -> PoolShare:
    """The number of runs that may hold ``pool`` at once, from the instance's configuration."""
    limit = pool_limit(instance, pool)
    if limit is not None and limit > 0:
        return PoolShare(limit, f"pool {pool!r} limit {limit}")
    return PoolShare(
        1, f"pool {pool!r} has no limit: concurrent runs may exceed the quota", limited=False
    )


def paced_for_pool(config: EngineConfig, share: PoolShare) -> EngineConfig:
    """``config`` pacing this run at its slot's share of ``requests_per_minute`` (if set)."""
    if config.requests_per_minute is None:
        return config
    return config.replace(requests_per_minute=config.requests_per_minute / share.slots)

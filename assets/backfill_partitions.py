"""The partitions of ``generated_images`` a Dagster backfill targets, read from DAGSTER_HOME.

``flux-pipeline plan --backfill ID`` imports this module only for that option, so the core
command never imports Dagster otherwise. Asset backfills (the UI's "Materialize" over a range,
``launchPartitionBackfill``) are read through this code location's asset graph; job backfills
(``synthetic_build``) through their partition names.
"""

from __future__ import annotations

import os

import dagster as dg

from flux_pipeline.assets.dagster_internals import BackfillTarget, backfill_target
from flux_pipeline.assets.generated_images import generated_images
from flux_pipeline.assets.jobs import synthetic_build


class BackfillLookupError(LookupError):
    """The backfill cannot be read, or does not target ``generated_images``."""


def backfill_partitions(backfill_id: str) -> list[str]:
    """The partition keys of ``generated_images`` that backfill ``backfill_id`` targets, sorted."""
    try:
        instance = dg.DagsterInstance.get()
    except dg.DagsterError as exc:
        raise BackfillLookupError(f"cannot open the Dagster instance: {exc}") from None
    home = os.environ.get("DAGSTER_HOME", "")
    from flux_pipeline.definitions import defs

    with instance:
        target = backfill_target(instance, backfill_id, defs)
    if target is None:
        raise BackfillLookupError(
            f"no backfill {backfill_id!r} in the Dagster instance at DAGSTER_HOME={home}"
        )
    keys = _target_keys(target, backfill_id)
    if not keys:
        raise BackfillLookupError(
            f"backfill {backfill_id!r} targets no partition of generated_images"
        )
    return sorted(keys)


def _target_keys(target: BackfillTarget, backfill_id: str) -> list[str]:
    if target.job_name is not None:
        if target.job_name != synthetic_build.name:
            raise BackfillLookupError(
                f"backfill {backfill_id!r} is of job {target.job_name!r}, which does not "
                "build generated_images"
            )
        return target.job_partitions
    if generated_images.key not in target.asset_partitions:
        raise BackfillLookupError(f"backfill {backfill_id!r} does not target generated_images")
    return target.asset_partitions[generated_images.key]

"""The partitions of ``generated_images`` a Dagster backfill targets, read from DAGSTER_HOME.

``flux-pipeline plan --backfill ID`` imports this module only for that option, so the core
command never imports Dagster otherwise. Asset backfills (the UI's "Materialize" over a range,
``launchPartitionBackfill``) are read through this code location's asset graph; job backfills
(``synthetic_build``) through their partition names.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import dagster as dg

from flux_pipeline.assets.generated_images import generated_images
from flux_pipeline.assets.jobs import synthetic_build

if TYPE_CHECKING:
    from dagster._core.execution.backfill import PartitionBackfill


class BackfillLookupError(LookupError):
    """The backfill cannot be read, or does not target ``generated_images``."""


def backfill_partitions(backfill_id: str) -> list[str]:
    """The partition keys of ``generated_images`` that backfill ``backfill_id`` targets, sorted."""
    try:
        instance = dg.DagsterInstance.get()
    except dg.DagsterError as exc:
        raise BackfillLookupError(f"cannot open the Dagster instance: {exc}") from None
    home = os.environ.get("DAGSTER_HOME", "")
    with instance:
        backfill = instance.get_backfill(backfill_id)
        if backfill is None:
            raise BackfillLookupError(
                f"no backfill {backfill_id!r} in the Dagster instance at DAGSTER_HOME={home}"
            )
        keys = _target_keys(backfill, backfill_id)
    if not keys:
        raise BackfillLookupError(
            f"backfill {backfill_id!r} targets no partition of generated_images"
        )
    return sorted(keys)


def _target_keys(backfill: PartitionBackfill, backfill_id: str) -> list[str]:
    if not backfill.is_asset_backfill:
        if backfill.job_name != synthetic_build.name:
            raise BackfillLookupError(
                f"backfill {backfill_id!r} is of job {backfill.job_name!r}, which does not "
                "build generated_images"
            )
        return list(backfill.partition_names or [])
    from flux_pipeline.definitions import defs

    data = backfill.get_asset_backfill_data(defs.resolve_asset_graph())
    if generated_images.key not in data.target_subset.partitions_subsets_by_asset_key:
        raise BackfillLookupError(f"backfill {backfill_id!r} does not target generated_images")
    return list(data.get_target_partitions_subset(generated_images.key).get_partition_keys())

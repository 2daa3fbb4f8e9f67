"""The partitioned build job and its daily schedule (stopped until someone turns it on)."""

from __future__ import annotations

import dagster as dg

from flux_pipeline.assets.generated_images import generated_images
from flux_pipeline.assets.prompt_table import prompt_table

#: Partitioned like ``generated_images`` (inferred): one run per day key validates the current
#: prompt table, then builds that day's images.
#: The checks on ``generated_images`` run in the same run for the same partition.
synthetic_build = dg.define_asset_job(
    "synthetic_build",
    selection=dg.AssetSelection.assets(prompt_table, generated_images),
    description="Validate the prompt table and build one daily partition of generated images.",
)

#: Builds the current day (UTC) shortly after midnight; off by default.
synthetic_build_schedule = dg.build_schedule_from_partitioned_job(
    synthetic_build,
    name="synthetic_build_daily",
    minute_of_hour=5,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

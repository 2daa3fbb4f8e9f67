"""The partitioned build job and its daily schedule (stopped until someone turns it on)."""

from __future__ import annotations

import dagster as dg

from flux_pipeline.assets.generated_images import generated_images
from flux_pipeline.assets.generation_metrics import generation_metrics
from flux_pipeline.assets.prompt_table import prompt_table
from flux_pipeline.assets.quality import attribute_metrics, near_duplicates

#: Partitioned like `generated_images` (inferred): one run per day key validates the current
#: prompt table, builds that day's images, then refreshes the (unpartitioned) near-duplicates
#: and aggregates over every partition. The checks on `generated_images` run in the same run
#: for the same partition.
synthetic_build = dg.define_asset_job(
    "synthetic_build",
    selection=dg.AssetSelection.assets(
        prompt_table, generated_images, near_duplicates, generation_metrics, attribute_metrics
    ),
    description=(
        "Validate the prompt table, build one daily partition of generated images, then "
        "refresh near_duplicates, generation_metrics and attribute_metrics over every partition."
    ),
)

#: Builds the current day (UTC) shortly after midnight; off by default.
synthetic_build_schedule = dg.build_schedule_from_partitioned_job(
    synthetic_build,
    name="synthetic_build_daily",
    minute_of_hour=5,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

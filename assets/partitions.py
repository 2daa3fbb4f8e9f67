"""The daily partitions of ``generated_images``: one partition = one build of the prompt table."""

from __future__ import annotations

import os

import dagster as dg

DEFAULT_START = "2026-01-01"

#: Daily keys ``YYYY-MM-DD`` from ``FLUX_PARTITION_START``. ``end_offset=1`` makes today (UTC) a
#: partition too, so the daily schedule and ``flux-pipeline demo`` build the current day.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=os.environ.get("FLUX_PARTITION_START", DEFAULT_START),
    end_offset=1,
)

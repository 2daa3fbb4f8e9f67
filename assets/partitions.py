"""The daily partitions of ``generated_images`` and how a backfill packs them into runs."""

from __future__ import annotations

import dagster as dg

from flux_pipeline.settings.environment import FLUX_MAX_PARTITIONS_PER_RUN, FLUX_PARTITION_START

#: Partitions one backfill run builds at most, unless ``FLUX_MAX_PARTITIONS_PER_RUN`` says.
DEFAULT_MAX_PARTITIONS_PER_RUN = FLUX_MAX_PARTITIONS_PER_RUN.default

#: Daily keys ``YYYY-MM-DD`` from ``FLUX_PARTITION_START``. ``end_offset=1`` makes today (UTC) a
#: partition too, so the daily schedule and ``flux-pipeline demo`` build the current day.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=FLUX_PARTITION_START.read(),
    end_offset=1,
)


def max_partitions_per_run() -> int:
    """``FLUX_MAX_PARTITIONS_PER_RUN`` (default 31, about a month), read when the code loads."""
    return FLUX_MAX_PARTITIONS_PER_RUN.read()


def backfill_policy() -> dg.BackfillPolicy:
    """Backfills of N partitions make ceil(N / max_partitions_per_run) runs, each building its
    range of consecutive partitions with one engine (one pacer, one in-flight window).

    ``BackfillPolicy`` is a beta parameter in Dagster 1.13; its warning is not repeated here.
    """
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=max_partitions_per_run())

"""The Dagster code location (``flux_pipeline.definitions:defs``): assembly only.

Resources follow the environment of the process that runs each step: ``SEGMIND_API_KEY`` /
``SEGMIND_BASE_URL`` point the engine at Segmind (or any compatible server), read at run time so
that no per-run override of another field can lose them; with neither set, the resource starts
the embedded emulator.
``FLUX_STORAGE_ROOT`` (default ``./data``) is the object store every asset reads and writes.
"""

from __future__ import annotations

from flux_pipeline import native_memory

# A process that loads the code location (code server, run worker) allocates as the CLI does.
# Before the imports below: they import pyarrow and pandas, whose first allocation fixes Arrow's
# allocator for the process, so each is one E402 ("import not at top of file") on purpose.
native_memory.tune()

import dagster as dg  # noqa: E402

from flux_pipeline.assets import (  # noqa: E402
    account_reconciliation,
    account_reconciliation_daily,
    account_reconciliation_job,
    attribute_metrics,
    flux_dead_runs,
    generated_images,
    generated_images_checks,
    generation_metrics,
    near_duplicates,
    prompt_table,
    synthetic_build,
    synthetic_build_schedule,
)
from flux_pipeline.resources import ObjectStoreResource, SegmindResource  # noqa: E402
from flux_pipeline.settings.environment import FLUX_STORAGE_ROOT  # noqa: E402

defs = dg.Definitions(
    assets=[
        prompt_table,
        generated_images,
        near_duplicates,
        generation_metrics,
        attribute_metrics,
        account_reconciliation,
    ],
    asset_checks=generated_images_checks,
    jobs=[synthetic_build, account_reconciliation_job],
    schedules=[synthetic_build_schedule, account_reconciliation_daily],
    sensors=[flux_dead_runs],
    # Every step of a run in the run's own process: the build is one asyncio step, the checks
    # and the metrics are quick reads, so a process per step (Dagster's default) would only add
    # an interpreter start-up and a code load per step to each run (about 5 s each, and many
    # more when a backfill's runs share the machine).
    executor=dg.in_process_executor,
    resources={
        "segmind": SegmindResource(),
        "storage": ObjectStoreResource(root=FLUX_STORAGE_ROOT.read()),
    },
)

"""Assets, checks, the build job, its schedule, the dead-run sensor (``flux_pipeline.assets``)."""

from flux_pipeline.assets.account_reconciliation import (
    account_reconciliation as account_reconciliation,
)
from flux_pipeline.assets.account_reconciliation import (
    account_reconciliation_daily as account_reconciliation_daily,
)
from flux_pipeline.assets.account_reconciliation import (
    account_reconciliation_job as account_reconciliation_job,
)
from flux_pipeline.assets.checks import generated_images_checks as generated_images_checks
from flux_pipeline.assets.generated_images import generated_images as generated_images
from flux_pipeline.assets.generation_metrics import generation_metrics as generation_metrics
from flux_pipeline.assets.jobs import synthetic_build as synthetic_build
from flux_pipeline.assets.jobs import synthetic_build_schedule as synthetic_build_schedule
from flux_pipeline.assets.partitions import daily_partitions as daily_partitions
from flux_pipeline.assets.prompt_table import prompt_table as prompt_table
from flux_pipeline.assets.quality import attribute_metrics as attribute_metrics
from flux_pipeline.assets.quality import near_duplicates as near_duplicates
from flux_pipeline.assets.run_monitor import flux_dead_runs as flux_dead_runs

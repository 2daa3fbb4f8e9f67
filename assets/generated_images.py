"""``generated_images``: each daily partition renders every prompt of the table via Segmind."""

from typing import Any

import dagster as dg
import pandas as pd

from flux_pipeline.assets.metadata import arrow_schema, image_markdown
from flux_pipeline.assets.partition_lineage import LINEAGE_READ_SCHEMA, read_partition_lineage
from flux_pipeline.assets.partitions import daily_partitions
from flux_pipeline.assets.prompt_table import prompt_table, read_prompt_table
from flux_pipeline.build import BuildProgress, build_partition
from flux_pipeline.contact_sheet import render_contact_sheet
from flux_pipeline.prompts import partition_requests
from flux_pipeline.resources.segmind import SegmindResource
from flux_pipeline.resources.storage import ObjectStoreResource
from flux_pipeline.segmind.errors import AuthenticationError, InsufficientCredits
from flux_pipeline.storage import ObjectStore

#: Seconds between two progress lines in the run log.
PROGRESS_INTERVAL = 5.0
#: Thumbnails on the contact sheet (the sheet is stored in the event log: keep it small).
CONTACT_SHEET_LIMIT = 24
CONTACT_SHEET_COLUMNS = 6
CONTACT_SHEET_THUMB = 128


@dg.asset(
    partitions_def=daily_partitions,
    deps=[prompt_table],
    kinds={"segmind", "parquet"},
)
def generated_images(
    context: dg.AssetExecutionContext,
    segmind: SegmindResource,
    storage: ObjectStoreResource,
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Every prompt of the stored table rendered by Fast Flux.1 Schnell for one day's partition.

    Images land at ``images/partition=KEY/`` and one lineage row per prompt at
    ``lineage/partition=KEY/lineage.parquet``. Images already stored under the same request key
    are reused without an API call; a FAILED image is a lineage row, not a failed run.
    """
    partition = context.partition_key
    store = storage.store()
    requests = partition_requests(read_prompt_table(store), partition)
    context.log.info(f"partition {partition}: {len(requests)} prompts to build")

    def log_progress(progress: BuildProgress) -> None:
        context.log.info(
            f"{progress.done}/{progress.total} images, {progress.rate:.2f}/s, "
            f"{progress.failed} failed, {progress.cached} cached, {progress.elapsed:.0f}s elapsed"
        )

    try:
        report = build_partition(
            requests,
            partition=partition,
            store=store,
            engine_config=segmind.engine_config(),
            progress=log_progress,
            progress_interval=PROGRESS_INTERVAL,
        )
    except (AuthenticationError, InsufficientCredits) as err:
        raise dg.Failure(description=str(err), allow_retries=False) from err

    lineage = read_partition_lineage(store, partition)
    if lineage is None:
        raise dg.Failure(description=f"the build wrote no lineage for partition {partition}")
    completed = lineage[lineage["status"] == "COMPLETED"]
    inference = completed["inference_time"].dropna()
    context.log.info(
        f"partition {partition} done: {report.completed} completed, {report.failed} failed, "
        f"{report.cached} cached, {report.api_requests} API requests in {report.elapsed_s:.1f}s"
    )
    metadata: dict[str, Any] = {
        "dagster/row_count": len(lineage),
        "dagster/column_schema": arrow_schema(LINEAGE_READ_SCHEMA),
        "completed": report.completed,
        "failed": report.failed,
        "cached": report.cached,
        "inference_time_p50_s": _quantile(inference, 0.5),
        "inference_time_p95_s": _quantile(inference, 0.95),
        "api_requests": report.api_requests,
        "retries": report.retries,
        "cost": report.engine.cost,
        "elapsed_s": round(report.elapsed_s, 2),
        "images": dg.MetadataValue.path(report.images_prefix_uri),
        "lineage": dg.MetadataValue.path(report.lineage_uri),
    }
    if len(completed):
        metadata["contact_sheet"] = _contact_sheet(store, partition, completed)
    return dg.MaterializeResult(metadata=metadata)


def _quantile(values: pd.Series, q: float) -> float | None:
    """The ``q`` quantile, rounded for display, or None when there are no values."""
    return round(float(values.quantile(q)), 3) if len(values) else None


def _contact_sheet(
    store: ObjectStore, partition: str, completed: pd.DataFrame
) -> dg.MarkdownMetadataValue:
    """A thumbnail grid of the first completed images, labelled with their prompt ids."""
    shown = completed.sort_values("prompt_id").head(CONTACT_SHEET_LIMIT)
    paths = {str(row.prompt_id): store.relpath(str(row.image_uri)) for row in shown.itertuples()}
    images = store.read_many(path for path in paths.values() if path)
    tiles = [(pid, images[path]) for pid, path in paths.items() if path in images]
    sheet = render_contact_sheet(tiles, columns=CONTACT_SHEET_COLUMNS, thumb=CONTACT_SHEET_THUMB)
    return image_markdown(sheet, alt=f"{len(tiles)} of {len(completed)} images of {partition}")

"""`generation_metrics`: per-partition counts, latencies and throughput over all lineage."""

import io
from collections import Counter

import dagster as dg

from flux_pipeline.assets.generated_images import generated_images
from flux_pipeline.assets.metadata import frame_schema, histogram_markdown, preview_table
from flux_pipeline.assets.quality import near_duplicates
from flux_pipeline.quality.near_duplicates import read_near_duplicates
from flux_pipeline.report.metrics import (
    METRIC_DESCRIPTIONS,
    METRIC_INPUTS,
    metrics_frame,
    partition_metrics,
)
from flux_pipeline.resources.storage import ObjectStoreResource
from flux_pipeline.store.layout import METRICS_PATH
from flux_pipeline.store.lineage import each_partition_lineage
from flux_pipeline.store.reconciliation import billed_by_partition

#: Partitions shown in the metadata table (the Parquet file holds all of them).
TABLE_ROWS = 60


@dg.asset(deps=[generated_images, near_duplicates], kinds={"parquet"})
def generation_metrics(
    context: dg.AssetExecutionContext, storage: ObjectStoreResource
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """One row per partition of `generated_images`, in `metrics/generation_metrics.parquet`.

    Counts cover every row of a partition; timings, requests and throughput only the images
    generated for it (`cached` false), since reused rows keep the timings of the build that made
    them. Each column is described in the column schema."""
    store = storage.store()
    rows, lineage_rows, latencies = [], 0, []
    # One partition's lineage at a time: memory follows a partition's size, not the store's.
    for partition, lineage in each_partition_lineage(store, columns=METRIC_INPUTS):
        rows.append(partition_metrics(partition, lineage))
        lineage_rows += len(lineage)
        generated = lineage[(lineage["status"] == "COMPLETED") & ~lineage["cached"].astype(bool)]
        latencies += [float(v) for v in generated["inference_time"].dropna()]
    flags = read_near_duplicates(store)["partition"].to_pylist()
    metrics = metrics_frame(rows, Counter(flags), billed_by_partition(store))
    buffer = io.BytesIO()
    metrics.to_parquet(buffer, index=False)
    store.write_atomic(METRICS_PATH, buffer.getvalue())
    context.log.info(f"{len(metrics)} partitions, {lineage_rows} lineage rows aggregated")
    newest_first = metrics.sort_values("partition", ascending=False)
    shown = min(len(metrics), TABLE_ROWS)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(metrics),
            "dagster/column_schema": frame_schema(metrics, METRIC_DESCRIPTIONS),
            "dagster/uri": store.uri(METRICS_PATH),
            # Lineage rows aggregated, over every partition.
            "lineage_rows": lineage_rows,
            "metrics_shown": f"newest {shown} of {len(metrics)} partitions",
            "metrics": preview_table(
                newest_first, rows=TABLE_ROWS, descriptions=METRIC_DESCRIPTIONS
            ),
            "inference_time_histogram": dg.MetadataValue.md(
                histogram_markdown(latencies, unit="inference_time (s) of generated images")
            ),
        }
    )

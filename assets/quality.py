"""`near_duplicates` and `attribute_metrics`: the dataset-level quality assets, refreshed by every
run that builds partitions (like `generation_metrics`)."""

import io
from typing import Any

import dagster as dg
import pyarrow.compute as pc

from flux_pipeline.assets.generated_images import generated_images, quality_limits
from flux_pipeline.assets.metadata import frame_schema, preview_table
from flux_pipeline.quality.near_duplicates import (
    NearDuplicates,
    read_near_duplicates,
    refresh_near_duplicates,
)
from flux_pipeline.report.attributes import (
    ATTRIBUTE_DESCRIPTIONS,
    ATTRIBUTE_INPUTS,
    attribute_frame,
    partition_attribute_metrics,
)
from flux_pipeline.resources.storage import ObjectStoreResource
from flux_pipeline.store.layout import ATTRIBUTE_METRICS_PATH, NEAR_DUPLICATES_PATH
from flux_pipeline.store.lineage import each_partition_lineage

NEAR_DUPLICATE_CHECK = "near_duplicate_rate_below_threshold"
#: Partitions whose share the check lists (the newest; every failing one is named too).
SHARES_SHOWN = 60
#: Rows of the newest partition's attribute table shown in the metadata.
TABLE_ROWS = 100


@dg.asset(
    deps=[generated_images],
    kinds={"parquet"},
    check_specs=[
        dg.AssetCheckSpec(
            NEAR_DUPLICATE_CHECK,
            asset="near_duplicates",
            description=(
                "Each partition's share of COMPLETED images flagged as near-duplicates stays "
                "at or under `FLUX_MAX_FLAGGED_RATE` (default 0.05); every share is recorded."
            ),
        )
    ],
)
def near_duplicates(
    context: dg.AssetExecutionContext, storage: ObjectStoreResource
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Images whose `phash` lies within `FLUX_NEAR_DUPLICATE_BITS` (4) bits of an earlier one
    (first in partition, prompt_id, variant order), across every partition:
    `quality/near_duplicates.parquet` (`image_uri`, `partition`, `near_duplicate_of`,
    `distance`). Only partitions new or rebuilt since the last refresh are read; blank images,
    copies of one generation and other backends' images are not compared."""
    limits = quality_limits()
    store = storage.store()
    found = refresh_near_duplicates(store, limits.near_duplicate_bits, warn=context.log.warning)
    for partition in found.read:  # the partitions' own metadata gains their count
        context.log_event(
            dg.AssetObservation(
                asset_key=generated_images.key,
                partition=partition,
                metadata={"near_duplicates": found.flagged.get(partition, 0)},
            )
        )
    context.log.info(
        f"{found.flags.num_rows} near-duplicates over {len(found.completed)} partitions "
        f"({len(found.read)} read{', every flag recomputed' if found.full else ''})"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": found.flags.num_rows,
            "dagster/uri": store.uri(NEAR_DUPLICATES_PATH),
            "bits": found.bits,
            "partitions_read": len(found.read),
            "recomputed_in_full": found.full,
        },
        check_results=[_rate_check(found, limits.max_flagged_rate)],
    )


def _rate_check(found: NearDuplicates, threshold: float) -> dg.AssetCheckResult:
    shares = {p: round(found.rate(p), 4) for p in sorted(found.completed)}
    failing = {p: share for p, share in shares.items() if share > threshold}
    shown = dict(list(shares.items())[-SHARES_SHOWN:]) | failing
    metadata: dict[str, Any] = {
        "threshold": threshold,
        "max_share": max(shares.values(), default=0.0),
        "partition_shares": dg.MetadataValue.json(dict(sorted(shown.items()))),
        "failing_partitions": len(failing),
    }
    return dg.AssetCheckResult(
        check_name=NEAR_DUPLICATE_CHECK,
        passed=not failing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=(
            f"{len(failing)} partition(s) over {threshold:.0%} near-duplicates" if failing else None
        ),
    )


@dg.asset(deps=[generated_images, near_duplicates], kinds={"parquet"})
def attribute_metrics(
    context: dg.AssetExecutionContext, storage: ObjectStoreResource
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """One row per partition, attribute and value: images, failed, blank, near_duplicates,
    inference_time p50/p95 and cost, in `metrics/attribute_metrics.parquet`: which label the
    service blocks most, and what each label costs. The metadata shows the newest partition."""
    store = storage.store()
    flags = read_near_duplicates(store)
    rows: list[dict[str, object]] = []
    for partition, lineage in each_partition_lineage(store, columns=ATTRIBUTE_INPUTS):
        mine = flags.filter(pc.equal(flags["partition"], partition))
        rows += partition_attribute_metrics(partition, lineage, set(mine["image_uri"].to_pylist()))
    table = attribute_frame(rows)
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    store.write_atomic(ATTRIBUTE_METRICS_PATH, buffer.getvalue())
    newest = table[table["partition"] == table["partition"].max()] if len(table) else table
    context.log.info(f"{len(table)} (partition, attribute, value) rows")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(table),
            "dagster/column_schema": frame_schema(table, ATTRIBUTE_DESCRIPTIONS),
            "dagster/uri": store.uri(ATTRIBUTE_METRICS_PATH),
            "newest_partition": str(newest["partition"].iloc[0]) if len(newest) else None,
            "newest_partition_table": preview_table(
                newest, rows=TABLE_ROWS, descriptions=ATTRIBUTE_DESCRIPTIONS
            ),
        }
    )

"""``generation_metrics``: one row per partition, aggregated from the lineage dataset.

Timings describe the images a partition holds, cached ones included: a cached row carries its
original generation's request id, ``inference_time`` and timestamps, so a partition rebuilt
from the cache keeps its figures (and one that reused another partition's images spans both
builds). ``retries`` counts HTTP requests beyond those of the cheapest completed image of the
partition (retries and extra polls), over rows generated there (``cached`` false).
"""

from __future__ import annotations

from typing import Final

import pandas as pd

#: Columns of the result, in order.
METRIC_COLUMNS: Final = (
    "partition",
    "prompts",
    "completed",
    "failed",
    "cached",
    "failure_rate",
    "inference_time_p50_s",
    "inference_time_p95_s",
    "inference_time_max_s",
    "latency_p50_s",
    "latency_p95_s",
    "requests",
    "retries",
    "throughput_images_per_s",
    "bytes",
    "first_submitted_at",
    "last_completed_at",
)


def generation_metrics(lineage: pd.DataFrame) -> pd.DataFrame:
    """Per-partition counts, percentiles, retries, throughput and bytes (see the module)."""
    rows = [_partition_metrics(str(key), group) for key, group in _by_partition(lineage)]
    frame = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    return frame.astype(
        {
            "partition": "string",
            "prompts": "int64",
            "completed": "int64",
            "failed": "int64",
            "cached": "int64",
            "requests": "int64",
            "retries": "int64",
            "bytes": "int64",
            "first_submitted_at": "datetime64[us, UTC]",
            "last_completed_at": "datetime64[us, UTC]",
        }
    )


def _by_partition(lineage: pd.DataFrame) -> list[tuple[object, pd.DataFrame]]:
    if lineage.empty:
        return []
    keyed = lineage.assign(partition=lineage["partition"].astype(str))
    return list(keyed.groupby("partition", sort=True))


def _partition_metrics(partition: str, rows: pd.DataFrame) -> dict[str, object]:
    completed = rows[rows["status"] == "COMPLETED"]
    generated = rows[~rows["cached"].astype(bool)]
    inference = completed["inference_time"].dropna().astype(float)
    latency = (completed["completed_at"] - completed["submitted_at"]).dt.total_seconds().dropna()
    attempts = generated["attempts"].astype("int64")
    cheapest = generated.loc[generated["status"] == "COMPLETED", "attempts"].min()
    if pd.isna(cheapest):
        cheapest = attempts.min() if len(attempts) else 0
    first = completed["submitted_at"].min()
    last = completed["completed_at"].max()
    span = (last - first).total_seconds() if pd.notna(first) and pd.notna(last) else 0.0
    return {
        "partition": partition,
        "prompts": len(rows),
        "completed": len(completed),
        "failed": int((rows["status"] == "FAILED").sum()),
        "cached": int(rows["cached"].astype(bool).sum()),
        "failure_rate": float((rows["status"] == "FAILED").mean()),
        "inference_time_p50_s": _quantile(inference, 0.5),
        "inference_time_p95_s": _quantile(inference, 0.95),
        "inference_time_max_s": float(inference.max()) if len(inference) else None,
        "latency_p50_s": _quantile(latency, 0.5),
        "latency_p95_s": _quantile(latency, 0.95),
        "requests": int(attempts.sum()),
        "retries": int((attempts - int(cheapest)).clip(lower=0).sum()),
        "throughput_images_per_s": len(completed) / span if span > 0 else None,
        "bytes": int(completed["image_bytes"].fillna(0).sum()),
        "first_submitted_at": first,
        "last_completed_at": last,
    }


def _quantile(values: pd.Series, q: float) -> float | None:
    return float(values.quantile(q)) if len(values) else None

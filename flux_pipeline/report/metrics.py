"""``generation_metrics``: one row per partition, aggregated from the lineage dataset.

Counts (``prompts``, ``completed``, ``failed``, ``cached``, ``blank``, ``near_duplicates``,
``failure_rate``, ``bytes``) describe every row the partition holds. Timings, request counts
and throughput describe only the generations made for that partition (``cached`` false), each
counted once: prompts of the partition that share a request key share one generation (same
request id, timings and attempts). A cached row carries another partition's generation, so
counting it would mix that build into this one. A partition made entirely of other partitions'
images therefore has null timings and zero requests, and rebuilding a partition from its own
images changes nothing here (its rows keep ``cached`` false and their original values).

``cost`` sums the service's reported cost over those generations, and ``cost_to_date`` runs it
over the partitions in key order (what the dataset has cost so far). Seconds are rounded to
milliseconds, throughput to 0.01 image/s, ``failure_rate`` to 4 places.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import pandas as pd

#: One line per column, in order: the columns of the result and what each one means.
METRIC_DESCRIPTIONS: Final = {
    "partition": "daily partition key YYYY-MM-DD",
    "prompts": "lineage rows of the partition (one per prompt)",
    "completed": "COMPLETED rows, cached ones included",
    "failed": "FAILED rows, cached ones included",
    "cached": "rows whose image was generated for another partition (reused, no API call)",
    "blank": "COMPLETED rows whose image is blank (luma_std below FLUX_BLANK_LUMA_STD)",
    "near_duplicates": "COMPLETED rows flagged by near_duplicates (within "
    "FLUX_NEAR_DUPLICATE_BITS of an earlier image)",
    "failure_rate": "failed / prompts",
    "inference_time_p50_s": "median inference_time (s) of images generated in this partition",
    "inference_time_p95_s": "95th percentile inference_time (s), generated images only",
    "inference_time_max_s": "largest inference_time (s), generated images only",
    "latency_p50_s": "median completed_at - submitted_at (s), generated images only",
    "latency_p95_s": "95th percentile completed_at - submitted_at (s), generated images only",
    "http_requests": "sum of attempts over generations (rows sharing a request key count once): "
    "every HTTP request, downloads included",
    "extra_requests": "http_requests beyond the cheapest completed generated image's, per row "
    "(retries and extra polls)",
    "throughput_images_per_s": "completed generated images / (last_completed_at - "
    "first_submitted_at)",
    "cost": "reported cost of the images generated for this partition (service units; null "
    "when the service reported none)",
    "cost_to_date": "running total of cost over this and every earlier partition",
    "billed_cost": "USD the account's record billed for requests sent for this partition, from "
    "the reconciliation files (null where no reconciliation covers it)",
    "bytes": "stored image bytes of COMPLETED rows, cached ones included",
    "first_submitted_at": "UTC: earliest submitted_at of a completed generated image",
    "last_completed_at": "UTC: latest completed_at of a completed generated image",
}
#: Columns of the result, in order.
METRIC_COLUMNS: Final = tuple(METRIC_DESCRIPTIONS)
#: The lineage columns the aggregation reads (read only these: a projection).
METRIC_INPUTS: Final = (
    "partition",
    "status",
    "cached",
    "request_key",
    "inference_time",
    "submitted_at",
    "completed_at",
    "attempts",
    "cost",
    "image_bytes",
    "blank",
)

SECONDS_DECIMALS: Final = 3
RATE_DECIMALS: Final = 2
RATIO_DECIMALS: Final = 4
COST_DECIMALS: Final = 6


def generation_metrics(
    lineage: pd.DataFrame, near_duplicates: Mapping[str, int] | None = None
) -> pd.DataFrame:
    """Per-partition counts, percentiles, requests, throughput and bytes (see the module)."""
    rows = [partition_metrics(str(key), g) for key, g in _by_partition(lineage)]
    return metrics_frame(rows, near_duplicates)


def metrics_frame(
    rows: Iterable[dict[str, object]],
    near_duplicates: Mapping[str, int] | None = None,
    billed: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """The metrics table of :func:`partition_metrics` rows, in partition order, with each
    partition's count of ``near_duplicates`` (flagged images, by partition) and ``billed``, the
    USD billed per partition where a reconciliation says (``billed_cost``)."""
    frame = pd.DataFrame(list(rows), columns=list(METRIC_COLUMNS))
    flagged = near_duplicates or {}
    frame["near_duplicates"] = [flagged.get(str(p), 0) for p in frame["partition"]]
    frame["cost_to_date"] = frame["cost"].fillna(0.0).cumsum().round(COST_DECIMALS)
    frame["billed_cost"] = frame["partition"].map(dict(billed or {})).astype("float64")
    for column in ("first_submitted_at", "last_completed_at"):  # all-null columns come naive
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame.astype(
        {
            "partition": "string",
            "prompts": "int64",
            "completed": "int64",
            "failed": "int64",
            "cached": "int64",
            "blank": "int64",
            "near_duplicates": "int64",
            "http_requests": "int64",
            "extra_requests": "int64",
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


def generated_cost(rows: pd.DataFrame) -> float | None:
    """The reported cost of the images generated for one partition's ``rows`` (the ``cost``
    column of :func:`generation_metrics`); None when the service reported none."""
    return _cost(_made(_generations(rows)))


def _generations(rows: pd.DataFrame) -> pd.DataFrame:
    """The generations made for the partition: rows not cached, each request key once."""
    return rows[~rows["cached"].astype(bool)].drop_duplicates("request_key")


def _made(generations: pd.DataFrame) -> pd.DataFrame:
    return generations[generations["status"] == "COMPLETED"]


def partition_metrics(partition: str, rows: pd.DataFrame) -> dict[str, object]:
    """One partition's row of the metrics table, from its ``rows`` (:data:`METRIC_INPUTS`)."""
    completed = rows[rows["status"] == "COMPLETED"]
    generated = _generations(rows)
    made = _made(generated)
    inference = made["inference_time"].dropna().astype(float)
    latency = (made["completed_at"] - made["submitted_at"]).dt.total_seconds().dropna()
    attempts = generated["attempts"].astype("int64")
    cheapest = made["attempts"].min()
    if pd.isna(cheapest):
        cheapest = attempts.min() if len(attempts) else 0
    first = made["submitted_at"].min()
    last = made["completed_at"].max()
    span = (last - first).total_seconds() if pd.notna(first) and pd.notna(last) else 0.0
    failed = rows["status"] == "FAILED"
    return {
        "partition": partition,
        "prompts": len(rows),
        "completed": len(completed),
        "failed": int(failed.sum()),
        "cached": int(rows["cached"].astype(bool).sum()),
        "blank": _count_true(completed["blank"]) if "blank" in rows else 0,
        "near_duplicates": 0,  # filled by metrics_frame from the near_duplicates asset
        "failure_rate": round(float(failed.mean()), RATIO_DECIMALS),
        "inference_time_p50_s": _seconds_quantile(inference, 0.5),
        "inference_time_p95_s": _seconds_quantile(inference, 0.95),
        "inference_time_max_s": _seconds_quantile(inference, 1.0),
        "latency_p50_s": _seconds_quantile(latency, 0.5),
        "latency_p95_s": _seconds_quantile(latency, 0.95),
        "http_requests": int(attempts.sum()),
        "extra_requests": int((attempts - int(cheapest)).clip(lower=0).sum()),
        "throughput_images_per_s": round(len(made) / span, RATE_DECIMALS) if span > 0 else None,
        "cost": _cost(made),
        "cost_to_date": None,  # filled over the partitions in order
        "billed_cost": None,  # from the reconciliation files (metrics_frame)
        "bytes": int(completed["image_bytes"].fillna(0).sum()),
        "first_submitted_at": first,
        "last_completed_at": last,
    }


def _count_true(values: pd.Series) -> int:
    """True values of a nullable boolean column (null: not known, not counted)."""
    return int(values.astype("boolean").fillna(False).sum())


def _seconds_quantile(values: pd.Series, q: float) -> float | None:
    return round(float(values.quantile(q)), SECONDS_DECIMALS) if len(values) else None


def _cost(made: pd.DataFrame) -> float | None:
    costs = made["cost"].dropna().astype(float)
    return round(float(costs.sum()), COST_DECIMALS) if len(costs) else None

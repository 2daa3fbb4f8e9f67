"""``attribute_metrics``: one row per partition, attribute and value (the dataset's labels).

It answers "which label does the service block most, and what does each label cost": for the
rows of a partition carrying that attribute value, ``images`` counts the rows (one image asked
for each), ``failed`` the FAILED ones, ``blank`` and ``near_duplicates`` the flagged ones.
Inference times and ``cost`` cover the images generated for the partition (``cached`` false,
each request key once), as in ``generation_metrics``; ``cost`` is the lineage's reported cost.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Final

import pandas as pd

ATTRIBUTE_DESCRIPTIONS: Final = {
    "partition": "daily partition key YYYY-MM-DD",
    "attribute": "attribute (prompt table column or grid attribute) name",
    "value": "attribute value, as text",
    "images": "lineage rows with this value (one image asked for each)",
    "failed": "FAILED rows with this value",
    "failure_rate": "failed / images",
    "blank": "COMPLETED rows with this value whose image is blank",
    "near_duplicates": "COMPLETED rows with this value flagged by near_duplicates",
    "inference_time_p50_s": "median inference_time (s) of images generated in this partition",
    "inference_time_p95_s": "95th percentile inference_time (s), generated images only",
    "cost": "reported cost of the images with this value generated for this partition (null "
    "when the service reported none)",
}
ATTRIBUTE_COLUMNS: Final = tuple(ATTRIBUTE_DESCRIPTIONS)
#: The lineage columns the aggregation reads.
ATTRIBUTE_INPUTS: Final = (
    "status",
    "cached",
    "request_key",
    "attributes",
    "blank",
    "image_uri",
    "inference_time",
    "cost",
)


def partition_attribute_metrics(
    partition: str, rows: pd.DataFrame, flagged: set[str]
) -> list[dict[str, object]]:
    """The rows of one partition's table, from its lineage ``rows`` (:data:`ATTRIBUTE_INPUTS`)
    and the ``image_uri`` of its images flagged as near-duplicates."""
    labels = [
        (index, name, value)
        for index, text in rows["attributes"].dropna().items()
        for name, value in json.loads(str(text)).items()
        if value is not None
    ]
    if not labels:
        return []
    pairs = pd.DataFrame(labels, columns=["row", "attribute", "value"])
    joined = pairs.join(rows, on="row")
    joined["value"] = joined["value"].astype(str)
    result = []
    for (attribute, value), group in joined.groupby(["attribute", "value"], sort=True):
        completed = group[group["status"] == "COMPLETED"]
        made = completed[~completed["cached"].astype(bool)].drop_duplicates("request_key")
        inference = made["inference_time"].dropna().astype(float)
        costs = made["cost"].dropna().astype(float)
        failed = int((group["status"] == "FAILED").sum())
        result.append(
            {
                "partition": partition,
                "attribute": str(attribute),
                "value": str(value),
                "images": len(group),
                "failed": failed,
                "failure_rate": round(failed / len(group), 4),
                "blank": int(completed["blank"].astype("boolean").fillna(False).sum()),
                "near_duplicates": int(completed["image_uri"].isin(flagged).sum()),
                "inference_time_p50_s": _quantile(inference, 0.5),
                "inference_time_p95_s": _quantile(inference, 0.95),
                "cost": round(float(costs.sum()), 6) if len(costs) else None,
            }
        )
    return result


def attribute_frame(rows: Iterable[dict[str, object]]) -> pd.DataFrame:
    """The table of :func:`partition_attribute_metrics` rows, typed."""
    frame = pd.DataFrame(list(rows), columns=list(ATTRIBUTE_COLUMNS))
    return frame.astype(
        {
            "partition": "string",
            "attribute": "string",
            "value": "string",
            "images": "int64",
            "failed": "int64",
            "failure_rate": "float64",
            "blank": "int64",
            "near_duplicates": "int64",
            "inference_time_p50_s": "float64",
            "inference_time_p95_s": "float64",
            "cost": "float64",
        }
    )


def _quantile(values: pd.Series, q: float) -> float | None:
    return round(float(values.quantile(q)), 3) if len(values) else None

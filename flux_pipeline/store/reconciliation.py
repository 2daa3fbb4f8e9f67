"""The reconciliation files under the root (``reconciliation/date=DAY/reconciliation.parquet``):
their schema, and what the rest of the house reads from them (the USD billed)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from flux_pipeline.store.layout import RECONCILIATION_DIR, reconciliation_path
from flux_pipeline.store.storage import ObjectStore

RECONCILIATION_SCHEMA: Final = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("billed_cost", pa.float64()),
        pa.field("request_key", pa.string()),
        pa.field("partition", pa.string()),
        pa.field("image_uri", pa.string()),
        pa.field("state", pa.string(), nullable=False),
        pa.field("record_status", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("error", pa.string()),
        pa.field("known", pa.bool_(), nullable=False),
    ]
)
USD_DECIMALS: Final = 6


def write_reconciliation(store: ObjectStore, day: str, columns: dict[str, list[Any]]) -> str:
    """Replace one day's file atomically with ``columns`` (:data:`RECONCILIATION_SCHEMA`)."""
    table = pa.Table.from_pydict(columns, schema=RECONCILIATION_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return store.write_atomic(reconciliation_path(day), buffer.getvalue())


def _rows(store: ObjectStore, columns: Sequence[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in store.list(RECONCILIATION_DIR):
        if path.endswith(".parquet"):
            data = io.BytesIO(store.read_bytes(path))
            rows += pq.read_table(data, columns=list(columns)).to_pylist()
    return rows


def billed_by_partition(store: ObjectStore) -> dict[str, float]:
    """USD the record billed per partition, over every reconciliation file under the root."""
    totals: dict[str, float] = {}
    for row in _rows(store, ("partition", "billed_cost")):
        if row["partition"] is not None and row["billed_cost"] is not None:
            totals[row["partition"]] = totals.get(row["partition"], 0.0) + row["billed_cost"]
    return {key: round(value, USD_DECIMALS) for key, value in totals.items()}


def billed_per_image(store: ObjectStore) -> list[float]:
    """The USD billed for each stored image the reconciliation files list (one per request)."""
    seen: dict[str, float] = {}
    for row in _rows(store, ("request_id", "billed_cost", "state")):
        if row["state"] == "stored" and row["billed_cost"] is not None:
            seen[row["request_id"]] = row["billed_cost"]
    return list(seen.values())

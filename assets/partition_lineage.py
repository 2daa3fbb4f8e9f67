"""Reading one partition's lineage file, as the assets and checks need it."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flux_pipeline.store.layout import lineage_path
from flux_pipeline.store.lineage import LINEAGE_SCHEMA, with_variant_zero
from flux_pipeline.store.storage import ObjectStore

#: The lineage columns as a reader sees them: ``partition`` (from the Hive folder) first.
LINEAGE_READ_SCHEMA = pa.schema([pa.field("partition", pa.string()), *LINEAGE_SCHEMA])


def read_lineage_schema(store: ObjectStore, partition: str) -> pa.Schema:
    """The schema stored in the partition's lineage file."""
    return pq.read_schema(io.BytesIO(store.read_bytes(lineage_path(partition))))


def read_partition_lineage(
    store: ObjectStore, partition: str, columns: Sequence[str] | None = None
) -> pd.DataFrame | None:
    """The partition's lineage rows (only ``columns`` when given), or None when the partition
    has no lineage yet."""
    try:
        data = store.read_bytes(lineage_path(partition))
    except FileNotFoundError:
        return None
    # The declared schema: a column an older file lacks (``backend``) reads as null, and a
    # missing ``variant`` as 0.
    names = list(columns) if columns is not None else None
    table = with_variant_zero(pq.read_table(io.BytesIO(data), schema=LINEAGE_SCHEMA, columns=names))
    frame: pd.DataFrame = table.to_pandas()
    return frame

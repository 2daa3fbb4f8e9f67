"""The lineage dataset: one Parquet file per partition, Hive layout, an explicit schema.

``lineage/partition=KEY/lineage.parquet`` holds one row per prompt and variant of the partition
(a file written before variants existed has no ``variant`` column: every reader here gives its
rows variant 0). The
``partition`` column comes from the folder name only (a file column of the same name would make
``pandas.read_parquet(lineage_dir)`` fail to merge the two).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from flux_pipeline.store.layout import LINEAGE_DIR, lineage_path
from flux_pipeline.store.storage import ObjectStore

_UTC = pa.timestamp("us", tz="UTC")

#: Every column written into the files; ``partition`` is added by the Hive folder.
LINEAGE_SCHEMA: Final = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("steps", pa.int64(), nullable=False),
        pa.field("aspect_ratio", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("request_id", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("inference_time", pa.float64()),
        pa.field("queue_time", pa.float64()),
        pa.field("cost", pa.float64()),
        pa.field("attempts", pa.int64(), nullable=False),
        pa.field("submitted_at", _UTC),
        pa.field("completed_at", _UTC),
        pa.field("image_uri", pa.string()),
        pa.field("image_sha256", pa.string()),
        pa.field("image_bytes", pa.int64()),
        pa.field("content_type", pa.string()),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("request_key", pa.string(), nullable=False),
        pa.field("cached", pa.bool_(), nullable=False),
        pa.field("backend", pa.string()),
        pa.field("variant", pa.int64(), nullable=False),
        pa.field("attributes", pa.string()),
        pa.field("phash", pa.string()),
        pa.field("luma_std", pa.float64()),
        pa.field("blank", pa.bool_()),
        pa.field("recovered_from", pa.string()),
    ]
)
#: One line per column as read back (``partition`` first), for schemas shown to people.
LINEAGE_DESCRIPTIONS: Final = {
    "partition": "daily partition key YYYY-MM-DD (from the Hive folder, not the file)",
    "prompt_id": "id of the prompt-table row",
    "prompt": "text prompt sent to the model",
    "seed": "seed sent: pinned in the table, or derived from (prompt_id, partition)",
    "steps": "inference steps sent (1-8)",
    "aspect_ratio": "aspect ratio sent, e.g. 16:9",
    "model": "Segmind model slug",
    "request_id": "the service's request id (of the original generation when cached)",
    "status": "COMPLETED or FAILED",
    "error": "why the image FAILED; null when COMPLETED",
    "inference_time": "seconds of inference, as reported by the service",
    "queue_time": "seconds queued, as reported by the service (null if not reported)",
    "cost": "cost of the image in the service's units, as reported (null if not reported)",
    "attempts": "HTTP requests spent on the image: submit, polls, result, media download, retries",
    "submitted_at": "UTC, client clock: when the accepted submit was sent",
    "completed_at": "UTC, client clock: when the image was stored (or FAILED was seen)",
    "image_uri": "where the image is stored (null when FAILED)",
    "image_sha256": "sha256 of the stored image bytes",
    "image_bytes": "size of the stored image in bytes",
    "content_type": "MIME type of the image as served",
    "width": "image width in pixels",
    "height": "image height in pixels",
    "request_key": "hash of (model, prompt, seed, steps, aspect_ratio): same key, same image",
    "cached": "true when the image was generated for another partition and reused without an "
    "API call (request_id, timings, attempts and timestamps are that generation's); a "
    "partition rebuilt from its own images keeps false",
    "backend": "who generated the image: the API root (e.g. https://api.segmind.com) or "
    "embedded-emulator (synthetic); null in partitions written before it was recorded",
    "variant": "which image of its prompt this is, 0-based (one row per prompt_id and variant); "
    "0 in partitions written before variants existed",
    "attributes": "the prompt's attributes (labels) as a JSON object string, e.g. "
    '{"style": "watercolor"}; null when it has none',
    "phash": "perceptual hash of the image (imagehash.phash, hash size 8) as 16 hex digits; "
    "null when FAILED",
    "luma_std": "standard deviation of the image's luminance, 0..255; null when FAILED",
    "blank": "true when luma_std is below FLUX_BLANK_LUMA_STD (a black or flat image); the row "
    "stays COMPLETED, exports leave it out; null when FAILED",
    "recovered_from": "history when the job or its image came from the account's record of "
    "requests (an ambiguous submit adopted, an expired result recovered); else null",
}
PARTITIONING: Final = ds.partitioning(pa.schema([("partition", pa.string())]), flavor="hive")
#: The lineage columns in their documented order, as read back: ``partition`` first.
LINEAGE_COLUMNS: Final = ("partition", *LINEAGE_SCHEMA.names)


@dataclass(frozen=True, slots=True)
class LineageRow:
    """One prompt's outcome in one partition; field for field the file columns."""

    prompt_id: str
    prompt: str
    seed: int
    steps: int
    aspect_ratio: str
    model: str
    request_id: str | None
    status: str
    error: str | None
    inference_time: float | None
    queue_time: float | None
    cost: float | None
    attempts: int
    submitted_at: datetime | None
    completed_at: datetime | None
    image_uri: str | None
    image_sha256: str | None
    image_bytes: int | None
    content_type: str | None
    width: int | None
    height: int | None
    request_key: str
    cached: bool
    #: Who generated it (:mod:`flux_pipeline.store.provenance`); None: written before it was kept.
    backend: str | None = None
    #: Which image of its prompt (0-based); a ledger entry written before variants reads 0.
    variant: int = 0
    #: The prompt's attributes as a JSON object string; None when it has none.
    attributes: str | None = None
    #: Facts of the stored image's pixels (:mod:`flux_pipeline.quality`); None when FAILED, or
    #: in a ledger entry written before they were kept (the next rebuild computes them).
    phash: str | None = None
    luma_std: float | None = None
    blank: bool | None = None
    #: ``"history"``: the job or its image came from the account's record; else None.
    recovered_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps as ISO 8601). Every field is a scalar: read as is, not
        deep-copied as ``asdict`` would."""
        return {
            f.name: v.isoformat() if isinstance(v := getattr(self, f.name), datetime) else v
            for f in fields(self)
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LineageRow:
        values: dict[str, Any] = {f.name: data.get(f.name) for f in fields(cls)}
        values["variant"] = values["variant"] or 0
        for name in ("submitted_at", "completed_at"):
            if values[name] is not None:
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)


def lineage_table(rows: list[LineageRow]) -> pa.Table:
    """The rows as an Arrow table with :data:`LINEAGE_SCHEMA` (raises on a wrong type)."""
    # Column by column: no per-row dict (asdict) is built for a partition of thousands of rows.
    columns = {name: [getattr(r, name) for r in rows] for name in LINEAGE_SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=LINEAGE_SCHEMA)


def write_partition_lineage(store: ObjectStore, partition: str, rows: list[LineageRow]) -> str:
    """Replace the partition's lineage file atomically with ``rows``; return its URI."""
    buffer = io.BytesIO()
    pq.write_table(lineage_table(rows), buffer, compression="zstd")
    return store.write_atomic(lineage_path(partition), buffer.getvalue())


#: The lineage dataset's schema: the Hive folder's ``partition`` first.
_SCHEMA: Final = pa.schema([pa.field("partition", pa.string()), *LINEAGE_SCHEMA])


def read_lineage(store: ObjectStore, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Every partition's lineage as one frame, ``partition`` (a string) first; ``columns``
    reads only those (a projection: the other columns are never decoded)."""
    names = list(columns) if columns is not None else None
    dataset = _dataset(store)
    if dataset is None:
        return _to_pandas(_SCHEMA.empty_table().select(names or _SCHEMA.names))
    return _to_pandas(with_variant_zero(dataset.to_table(columns=names)))


def each_partition_lineage(
    store: ObjectStore, columns: Sequence[str] | None = None
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Each partition's lineage in turn, sorted by partition, as :func:`read_lineage` reads it:
    one partition's rows in memory at a time, however many partitions the store holds."""
    dataset = _dataset(store)
    if dataset is None:
        return
    names = list(columns) if columns is not None else None
    keys = {
        str(ds.get_partition_keys(fragment.partition_expression)["partition"])
        for fragment in dataset.get_fragments()
    }
    for key in sorted(keys):
        rows = dataset.to_table(columns=names, filter=ds.field("partition") == key)
        yield key, _to_pandas(with_variant_zero(rows))


#: The file columns as read from any file, older ones too: nullable, so a missing one is null.
_FILE_SCHEMA: Final = pa.schema([f.with_nullable(True) for f in LINEAGE_SCHEMA])


def read_partition_lineage(store: ObjectStore, partition: str, columns: Sequence[str]) -> pa.Table:
    """One partition's lineage file, ``columns`` only (``partition`` is not a file column); a
    column the file predates reads as nulls, ``variant`` as 0."""
    data = store.read_bytes(lineage_path(partition))
    return with_variant_zero(
        pq.read_table(io.BytesIO(data), schema=_FILE_SCHEMA, columns=list(columns))
    )


def _dataset(store: ObjectStore) -> ds.Dataset | None:
    """The lineage folder as a Hive-partitioned dataset; None while it holds no file."""
    if not store.list(LINEAGE_DIR):
        return None
    return ds.dataset(
        store.path(LINEAGE_DIR),
        filesystem=store.fs,
        format="parquet",
        partitioning=PARTITIONING,
        schema=_SCHEMA,
        exclude_invalid_files=False,
    )


def with_variant_zero(table: pa.Table) -> pa.Table:
    """``table`` with a null ``variant`` (a row written before variants existed) read as 0."""
    if "variant" not in table.column_names:
        return table
    index = table.column_names.index("variant")
    filled = pc.fill_null(table.column(index), 0)
    return table.set_column(index, pa.field("variant", pa.int64(), nullable=False), filled)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    frame: pd.DataFrame = table.to_pandas()
    return frame

"""The dataset's near-duplicates: images whose ``phash`` lies within a few bits of an earlier one.

One row per flagged image in ``quality/near_duplicates.parquet``: ``image_uri``, ``partition``,
``near_duplicate_of`` (the ``image_uri`` of the earlier image) and ``distance`` in bits. "Earlier"
is first in (partition, prompt_id, variant) order, so the answer never depends on which run
finished first; among several earlier matches the nearest is named (then the first in order).

Not compared: copies of one generation (the same ``request_key``, e.g. a cross-partition reuse),
blank images (flagged already), images of different backends, and rows without a ``phash``
(FAILED, or a partition built before the column existed, until its next rebuild).

The index is one Parquet segment per partition (``quality/phash_index/partition=KEY.parquet``)
that names the lineage version it was read from. A refresh reads only the lineage of partitions
new or changed since the last one, compares them against every segment through a pigeonhole
multi-index (:mod:`flux_pipeline.quality.multi_index`), and rewrites the flags file, which
records the bits and the lineage versions it covers. Changing the bits recomputes every flag;
a missing or corrupt segment or flags file is rebuilt from the lineage with a warning.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flux_pipeline.quality.multi_index import MultiIndex
from flux_pipeline.settings.environment import FLUX_NEAR_DUPLICATE_BITS
from flux_pipeline.store.layout import (
    LINEAGE_DIR,
    NEAR_DUPLICATES_PATH,
    PHASH_INDEX_DIR,
    lineage_partition,
    phash_segment_partition,
    phash_segment_path,
)
from flux_pipeline.store.lineage import read_partition_lineage
from flux_pipeline.store.storage import ObjectStore

log = logging.getLogger("flux_pipeline.quality")

#: Two images within this many bits are near-duplicates unless FLUX_NEAR_DUPLICATE_BITS says so.
DEFAULT_NEAR_DUPLICATE_BITS: Final = FLUX_NEAR_DUPLICATE_BITS.default

NEAR_DUPLICATES_SCHEMA: Final = pa.schema(
    [
        pa.field("image_uri", pa.string(), nullable=False),
        pa.field("partition", pa.string(), nullable=False),
        pa.field("near_duplicate_of", pa.string(), nullable=False),
        pa.field("distance", pa.int64(), nullable=False),
    ]
)
#: One index entry: a COMPLETED, non-blank image with a phash.
SEGMENT_SCHEMA: Final = pa.schema(
    [
        pa.field("prompt_id", pa.string()),
        pa.field("variant", pa.int64()),
        pa.field("image_uri", pa.string()),
        #: The request key's first 64 bits: copies of one generation share it.
        pa.field("key_hash", pa.uint64()),
        pa.field("backend", pa.string()),
        pa.field("phash", pa.uint64()),
    ]
)
_LINEAGE_COLUMNS: Final = (
    "prompt_id",
    "variant",
    "status",
    "image_uri",
    "request_key",
    "backend",
    "phash",
    "blank",
)
#: Segments read (or rebuilt) at once: Parquet decoding leaves the GIL.
READERS: Final = 4
_META: Final = b"flux_pipeline"
_FORMAT: Final = 1


@dataclass(frozen=True)
class NearDuplicates:
    """A refresh's answer: the flags, and each partition's COMPLETED and flagged counts."""

    flags: pa.Table
    bits: int
    completed: dict[str, int]
    flagged: dict[str, int]
    #: Partitions whose lineage was read by this refresh (new, changed, or rebuilt).
    read: list[str] = field(default_factory=list)
    full: bool = False

    def rate(self, partition: str) -> float:
        """Share of the partition's COMPLETED images flagged as near-duplicates."""
        completed = self.completed.get(partition, 0)
        return self.flagged.get(partition, 0) / completed if completed else 0.0


def refresh_near_duplicates(
    store: ObjectStore, bits: int, warn: Callable[[str], None] = log.warning
) -> NearDuplicates:
    """Bring the index and ``quality/near_duplicates.parquet`` up to the lineage; return them.

    The flags file is replaced only if no other refresh replaced it meanwhile (compare and
    swap); otherwise this refresh starts again from the newer one, so two runs refreshing at
    once both end up counted."""
    if not FLUX_NEAR_DUPLICATE_BITS.bound["ge"] <= bits <= FLUX_NEAR_DUPLICATE_BITS.bound["le"]:
        raise ValueError(
            f"FLUX_NEAR_DUPLICATE_BITS must be {FLUX_NEAR_DUPLICATE_BITS.requirement()}, got {bits}"
        )
    while True:
        found = _refresh(store, bits, warn)
        if found is not None:
            return found


def _refresh(store: ObjectStore, bits: int, warn: Callable[[str], None]) -> NearDuplicates | None:
    """One attempt; None when another refresh replaced the flags file first."""
    versions = {
        key: version
        for path, version in store.versions(LINEAGE_DIR).items()
        if (key := lineage_partition(path)) is not None
    }
    tagged = store.read_tagged(NEAR_DUPLICATES_PATH)
    previous = None if tagged is None else _parse_flags(tagged.data, warn)
    full = previous is None or previous.bits != bits
    covered = {} if previous is None else previous.versions
    if previous is not None and previous.bits != bits:
        log.info(
            "near_duplicates: %d bits instead of %d, every flag recomputed", bits, previous.bits
        )

    stored = {
        key: path
        for path in store.list(PHASH_INDEX_DIR)
        if (key := phash_segment_partition(path)) is not None
    }

    def load(partition: str) -> tuple[_Segment, bool]:
        version = versions[partition]
        segment = _read_segment(store, partition, version, warn) if partition in stored else None
        if segment is not None:
            return segment, False
        if partition not in stored and covered.get(partition) == version and not full:
            warn(
                f"near_duplicates: index of partition {partition} missing, rebuilt from the lineage"
            )
        return _segment_from_lineage(store, partition, version), True

    ordered = sorted(versions)
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        loaded = dict(zip(ordered, pool.map(load, ordered), strict=True))
    segments = {p: segment for p, (segment, _) in loaded.items()}
    read = [p for p, (_, fresh) in loaded.items() if fresh]
    changed = [p for p in ordered if covered.get(p) != versions[p]]
    for partition, path in stored.items():
        if partition not in versions:
            store.delete(path)

    entries = _concat([segments[p] for p in sorted(segments)], sorted(segments))
    kept, requery = _kept_flags(previous, entries, set(changed) | (set(covered) - set(versions)))
    if full:
        queries = np.arange(entries.num_rows, dtype=np.int64)
    else:
        fresh = pc.is_in(entries["partition"], pa.array(changed, pa.string()))
        rows = np.flatnonzero(fresh.to_numpy(zero_copy_only=False))
        queries = np.union1d(rows, np.array(sorted(requery), dtype=np.int64)).astype(np.int64)
    flags = _flags(entries, queries, bits, {} if full else kept)
    if not _write_flags(store, flags, bits, versions, None if tagged is None else tagged.tag):
        return None
    completed = {p: s.completed for p, s in segments.items()}
    counts = pc.value_counts(flags["partition"]).to_pylist() if flags.num_rows else []
    flagged = {str(c["values"]): int(c["counts"]) for c in counts}
    return NearDuplicates(flags, bits, completed, flagged, read, full)


def near_duplicates_of(
    store: ObjectStore,
    partitions: Sequence[str],
    bits: int,
    warn: Callable[[str], None] = log.warning,
) -> dict[str, str]:
    """``{image_uri: near_duplicate_of}`` of the flagged images of ``partitions``: from the
    flags file when it covers their current lineage at ``bits``, else after a refresh."""
    wanted = set(partitions)
    versions = {
        key: version
        for path, version in store.versions(LINEAGE_DIR).items()
        if (key := lineage_partition(path)) in wanted
    }
    tagged = store.read_tagged(NEAR_DUPLICATES_PATH)
    flags = None if tagged is None else _parse_flags(tagged.data, warn)
    if (
        flags is None
        or flags.bits != bits
        or any(flags.versions.get(p) != v for p, v in versions.items())
    ):
        table = refresh_near_duplicates(store, bits, warn).flags
    else:
        table = flags.table
    chosen = table.filter(pc.is_in(table["partition"], pa.array(sorted(wanted), pa.string())))
    return dict(
        zip(chosen["image_uri"].to_pylist(), chosen["near_duplicate_of"].to_pylist(), strict=True)
    )


def read_near_duplicates(store: ObjectStore) -> pa.Table:
    """The flags as last refreshed (an empty table when none were written or readable)."""
    try:
        return pq.read_table(io.BytesIO(store.read_bytes(NEAR_DUPLICATES_PATH))).select(
            NEAR_DUPLICATES_SCHEMA.names
        )
    except (FileNotFoundError, OSError, pa.ArrowException, KeyError):
        return NEAR_DUPLICATES_SCHEMA.empty_table()


@dataclass(frozen=True)
class _Segment:
    entries: pa.Table
    completed: int


@dataclass(frozen=True)
class _Flags:
    table: pa.Table
    bits: int
    versions: dict[str, str]


def _segment_from_lineage(store: ObjectStore, partition: str, version: str) -> _Segment:
    """The partition's index entries read from its lineage, and written as its segment."""
    rows = read_partition_lineage(store, partition, _LINEAGE_COLUMNS)
    completed = pc.equal(rows["status"], "COMPLETED")
    usable = pc.and_(
        pc.and_(pc.fill_null(completed, False), pc.invert(pc.fill_null(rows["blank"], False))),
        pc.is_valid(rows["phash"]),
    )
    kept = rows.filter(usable).sort_by([("prompt_id", "ascending"), ("variant", "ascending")])
    phash = _hex_prefix(kept["phash"])
    entries = pa.table(
        {
            "prompt_id": kept["prompt_id"],
            "variant": pc.fill_null(kept["variant"], 0),
            "image_uri": kept["image_uri"],
            "key_hash": pa.array(_hex_prefix(kept["request_key"]), pa.uint64()),
            "backend": kept["backend"],
            "phash": pa.array(phash, pa.uint64()),
        },
        schema=SEGMENT_SCHEMA,
    )
    count = int(pc.sum(pc.cast(pc.fill_null(completed, False), pa.int64())).as_py() or 0)
    meta = {"format": _FORMAT, "lineage_version": version, "completed": count}
    buffer = io.BytesIO()
    table = entries.replace_schema_metadata({_META: json.dumps(meta).encode()})
    pq.write_table(table, buffer, compression="zstd")
    store.write_atomic(phash_segment_path(partition), buffer.getvalue())
    return _Segment(entries, count)


def _hex_prefix(values: pa.ChunkedArray) -> np.ndarray:
    """The first 16 hex digits of each string as a 64-bit integer."""
    return np.array([int(v[:16], 16) for v in values.to_pylist()], dtype=np.uint64)


def _read_segment(
    store: ObjectStore, partition: str, version: str, warn: Callable[[str], None]
) -> _Segment | None:
    """The stored segment when it was read from lineage ``version``; None when it is stale,
    and (with a warning) when it is unreadable."""
    try:
        table = pq.read_table(io.BytesIO(store.read_bytes(phash_segment_path(partition))))
        meta = json.loads((table.schema.metadata or {})[_META])
        entries = table.select(SEGMENT_SCHEMA.names).cast(SEGMENT_SCHEMA)
        stale = meta["format"] != _FORMAT or meta["lineage_version"] != version
        return None if stale else _Segment(entries, int(meta["completed"]))
    except (FileNotFoundError, OSError, pa.ArrowException, KeyError, ValueError, TypeError):
        warn(
            f"near_duplicates: index of partition {partition} unreadable, rebuilt from the lineage"
        )
        return None


def _parse_flags(data: bytes, warn: Callable[[str], None]) -> _Flags | None:
    try:
        table = pq.read_table(io.BytesIO(data))
        meta = json.loads((table.schema.metadata or {})[_META])
        if meta["format"] != _FORMAT:
            return None
        flags = table.select(NEAR_DUPLICATES_SCHEMA.names).cast(NEAR_DUPLICATES_SCHEMA)
        versions = {str(k): str(v) for k, v in meta["lineage_versions"].items()}
        return _Flags(flags, int(meta["bits"]), versions)
    except (OSError, pa.ArrowException, KeyError, ValueError, TypeError, AttributeError):
        warn(f"near_duplicates: {NEAR_DUPLICATES_PATH} unreadable, recomputed from the lineage")
        return None


def _write_flags(
    store: ObjectStore, flags: pa.Table, bits: int, versions: dict[str, str], tag: str | None
) -> bool:
    """Write the flags unless the file changed since it was read with ``tag`` (None: absent)."""
    meta = {"format": _FORMAT, "bits": bits, "lineage_versions": versions}
    buffer = io.BytesIO()
    pq.write_table(flags.replace_schema_metadata({_META: json.dumps(meta).encode()}), buffer)
    if tag is None:
        return store.create_exclusive(NEAR_DUPLICATES_PATH, buffer.getvalue())
    return store.replace_if(NEAR_DUPLICATES_PATH, buffer.getvalue(), tag)


def _concat(segments: list[_Segment], partitions: list[str]) -> pa.Table:
    """Every entry, with its ``partition``, in (partition, prompt_id, variant) order."""
    tables = [
        s.entries.append_column("partition", pa.array([p] * s.entries.num_rows, pa.string()))
        for s, p in zip(segments, partitions, strict=True)
    ]
    if not tables:
        return SEGMENT_SCHEMA.append(pa.field("partition", pa.string())).empty_table()
    return pa.concat_tables(tables)


def _kept_flags(
    previous: _Flags | None, entries: pa.Table, gone: set[str]
) -> tuple[dict[int, tuple[int, int]], set[int]]:
    """Previous flags still valid (``{later row: (distance, earlier row)}``), and the rows whose
    original was in a changed or removed partition (to be looked up again)."""
    if previous is None or previous.table.num_rows == 0:
        return {}, set()
    named = pc.unique(
        pa.concat_arrays(
            [
                previous.table["image_uri"].combine_chunks(),
                previous.table["near_duplicate_of"].combine_chunks(),
            ]
        )
    )
    rows = np.flatnonzero(pc.is_in(entries["image_uri"], named).to_numpy(zero_copy_only=False))
    found = entries.take(pa.array(rows, pa.int64()))
    row_of = dict(zip(found["image_uri"].to_pylist(), rows.tolist(), strict=True))
    partition_of = dict(
        zip(found["image_uri"].to_pylist(), found["partition"].to_pylist(), strict=True)
    )
    kept: dict[int, tuple[int, int]] = {}
    requery: set[int] = set()
    for flag in previous.table.to_pylist():
        uri, original = flag["image_uri"], flag["near_duplicate_of"]
        if uri not in row_of or partition_of[uri] in gone:
            continue
        if original in row_of and partition_of[original] not in gone:
            kept[row_of[uri]] = (int(flag["distance"]), row_of[original])
        else:
            requery.add(row_of[uri])
    return kept, requery


def _flags(
    entries: pa.Table, queries: np.ndarray, bits: int, kept: dict[int, tuple[int, int]]
) -> pa.Table:
    """The flags: ``kept`` improved by every comparable pair found for ``queries``."""
    best = dict(kept)  # later row -> (distance, earlier row)
    if len(queries) and entries.num_rows:
        hashes = entries["phash"].to_numpy()
        found = MultiIndex(hashes, bits).search(hashes[queries])
        query, entry, dist = queries[found.query], found.entry, found.distance
        pairs_q, pairs_e = pa.array(query, pa.int64()), pa.array(entry, pa.int64())
        same_key = pc.equal(entries["key_hash"].take(pairs_q), entries["key_hash"].take(pairs_e))
        same_backend = pc.equal(entries["backend"].take(pairs_q), entries["backend"].take(pairs_e))
        comparable = pc.and_(
            pc.invert(pc.fill_null(same_key, False)), pc.fill_null(same_backend, True)
        )
        keep = comparable.to_numpy(zero_copy_only=False) & (query != entry)
        # Rows are in (partition, prompt_id, variant) order: the smaller row is the earlier.
        for q, e, d in zip(
            query[keep].tolist(), entry[keep].tolist(), dist[keep].tolist(), strict=True
        ):
            later, earlier = (q, e) if q > e else (e, q)
            if later not in best or (d, earlier) < best[later]:
                best[later] = (d, earlier)
    rows = sorted(best)
    flagged = entries.take(pa.array(rows, pa.int64()))
    originals = entries["image_uri"].take(pa.array([best[r][1] for r in rows], pa.int64()))
    return pa.table(
        {
            "image_uri": flagged["image_uri"],
            "partition": flagged["partition"],
            "near_duplicate_of": originals,
            "distance": pa.array([best[r][0] for r in rows], pa.int64()),
        },
        schema=NEAR_DUPLICATES_SCHEMA,
    )

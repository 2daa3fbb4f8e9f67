"""The stored partitions a dataset export covers, and their lineage rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Final

import pyarrow.parquet as pq

from flux_pipeline.store.imagefolder import attribute_names
from flux_pipeline.store.layout import LINEAGE_DIR, lineage_partition, lineage_path
from flux_pipeline.store.lineage import LineageRow
from flux_pipeline.store.storage import ObjectStore

#: ``START...END`` (Dagster's ``--partition-range`` syntax; ``START..END`` is accepted too)
#: selects every stored partition from START to END, both included.
RANGE_SEPARATOR: Final = "..."
_SHORT_SEPARATOR: Final = ".."


def stored_partitions(store: ObjectStore) -> list[str]:
    """The keys of every partition with a lineage file, sorted."""
    keys = (lineage_partition(path) for path in store.list(LINEAGE_DIR))
    return sorted(key for key in keys if key is not None)


def select_partitions(store: ObjectStore, specs: Sequence[str] = ()) -> list[str]:
    """The stored partitions named by ``specs`` (keys or ``START...END`` ranges), sorted.

    No spec selects every stored partition. A key with no lineage, or a range that holds no
    stored partition, raises ValueError naming it.
    """
    stored = stored_partitions(store)
    if not specs:
        if not stored:
            raise ValueError(f"no partition has a lineage file under {store.uri(LINEAGE_DIR)}")
        return stored
    chosen: set[str] = set()
    for spec in specs:
        if _SHORT_SEPARATOR in spec:
            separator = RANGE_SEPARATOR if RANGE_SEPARATOR in spec else _SHORT_SEPARATOR
            start, _, end = spec.partition(separator)
            if not start or not end or start > end or "." in end:
                raise ValueError(f"partition range {spec!r}: write START...END with START <= END")
            found = [key for key in stored if start <= key <= end]
            if not found:
                raise ValueError(f"partition range {spec!r} holds no built partition")
            chosen.update(found)
        elif spec in stored:
            chosen.add(spec)
        else:
            raise ValueError(f"partition {spec!r} has no lineage under {store.uri(LINEAGE_DIR)}")
    return sorted(chosen)


def read_partition_rows(store: ObjectStore, partition: str) -> list[LineageRow]:
    """The lineage rows of one partition, in the order they were written."""
    path = store.path(lineage_path(partition))
    table = pq.read_table(path, filesystem=store.fs)
    names = [f.name for f in fields(LineageRow)]
    rows = []
    for record in table.to_pylist():
        values = {n: record.get(n) for n in names}
        values["variant"] = values["variant"] or 0  # a file written before variants existed
        rows.append(LineageRow(**values))
    return rows


def attribute_union(store: ObjectStore, partitions: Sequence[str]) -> list[str]:
    """Every attribute name of the COMPLETED rows of ``partitions``, in first-seen order: the
    keys a range's ``metadata.jsonl`` files share."""
    names: dict[str, None] = {}
    for partition in partitions:
        names.update(dict.fromkeys(attribute_names(read_partition_rows(store, partition))))
    return list(names)

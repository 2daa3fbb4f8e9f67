"""``metadata.jsonl`` beside each partition's images: the folder is a Hugging Face imagefolder.

``datasets.load_dataset("imagefolder", data_dir=ROOT + "/images")`` then loads every partition
with its prompt and seed, and ``data_files`` globs (``partition=2024-01-*/*``) choose
partitions. Because metadata files are present, ``datasets`` adds no ``label`` column from the
``partition=KEY`` folder names, and those names match none of its split words, so everything
is one ``train`` split. Image file names can: ``datasets`` guesses splits from file names too
(``test-7.jpg``, ``cat_val-3.jpg``), so such names are warned about; loading with
``data_files`` never guesses.

Each line also carries the row's ``variant``, its ``attributes`` (JSON object string, ``{}``
when it has none) and each attribute as a top-level key, so ``datasets`` shows the labels as
columns. Every line of a file has the same keys; an attribute a row lacks is ``""`` (as in the
prompt table), not null: ``datasets`` (5.2) types each column by the first metadata file it
reads, and fails on a column that is null throughout it. Nor does it load a folder whose
metadata files have different keys whole: it fails, or takes the keys of the file it reads first
and drops or nulls the others' columns. Partitions built before a key existed, or from
tables with other attributes, are rewritten with the union of their keys by
``flux-pipeline export imagefolder -p RANGE`` (``attributes=`` below), and a build warns when a
partition's keys differ from the previous partition's (:func:`key_difference`).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

from flux_pipeline.protocol import COMPLETED
from flux_pipeline.store.layout import LINEAGE_DIR, lineage_partition, metadata_path
from flux_pipeline.store.lineage import LineageRow
from flux_pipeline.store.storage import ObjectStore

log = logging.getLogger(__name__)

#: The lineage fields of each metadata line, after ``file_name`` and ``partition``.
METADATA_FIELDS: Final = (
    "prompt_id",
    "prompt",
    "seed",
    "steps",
    "aspect_ratio",
    "width",
    "height",
    "request_key",
    "model",
    "backend",
    "variant",
    "attributes",
    "blank",
)
#: ``attributes`` of a line whose row has none (the lineage holds null).
NO_ATTRIBUTES: Final = "{}"
#: An attribute the row lacks (as in the prompt table, an empty cell is an absent attribute).
ABSENT: Final = ""
#: A file name in which ``datasets`` (data_dir= without data_files=) sees a split name.
_SPLIT_WORD: Final = re.compile(
    r"(?:^|[-._ 0-9])(?:train|training|validation|valid|dev|val|test|testing|eval|evaluation)"
    r"[-._ 0-9]"
)


def labels(row: LineageRow) -> dict[str, str]:
    """The row's attributes as a dict (empty when it has none)."""
    found: dict[str, str] = json.loads(row.attributes) if row.attributes else {}
    return found


def attribute_names(rows: Iterable[LineageRow]) -> list[str]:
    """Every attribute name of the COMPLETED ``rows``, in first-seen order."""
    names: dict[str, None] = {}
    for row in rows:
        if row.status == COMPLETED and row.attributes:
            names.update(dict.fromkeys(labels(row)))
    return list(names)


def metadata_keys(attributes: Sequence[str]) -> list[str]:
    """The keys of every line of a metadata file whose rows have ``attributes``."""
    return ["file_name", "partition", *METADATA_FIELDS, *attributes]


def metadata_record(
    partition: str, row: LineageRow, attributes: Sequence[str] = ()
) -> dict[str, Any]:
    """One ``metadata.jsonl`` line of a COMPLETED row: its image's file name, then lineage, then
    each of ``attributes`` (null where the row lacks it; it must not have others)."""
    if row.image_uri is None:
        raise ValueError(f"partition {partition}, prompt_id {row.prompt_id!r}: no image_uri")
    record: dict[str, Any] = {
        "file_name": row.image_uri.rsplit("/", 1)[-1],
        "partition": partition,
    }
    record.update((name, getattr(row, name)) for name in METADATA_FIELDS)
    # Never null: datasets types a column by the first metadata file it reads, and one null
    # throughout that file fails the load ("its type in this file is null").
    record["attributes"] = row.attributes or NO_ATTRIBUTES
    own = labels(row)
    record.update((name, own.get(name, ABSENT)) for name in attributes)
    if not own.keys() <= set(attributes):
        extra = sorted(own.keys() - set(attributes))
        raise ValueError(f"partition {partition}, prompt_id {row.prompt_id!r}: attributes {extra}")
    # False also where the lineage does not know it (built before the quality columns), never
    # null, for the same reason.
    record["blank"] = row.blank is True
    return record


def write_imagefolder_metadata(
    store: ObjectStore,
    partition: str,
    rows: Sequence[LineageRow],
    *,
    attributes: Sequence[str] | None = None,
) -> str:
    """Replace ``images/partition=KEY/metadata.jsonl`` atomically; return its URI.

    One line per COMPLETED row of ``rows``, in row order, with its ``backend``; FAILED rows have
    no image and no line. (A build lists every row it made; ``flux-pipeline export imagefolder``
    passes only the rows a service made unless asked for synthetic ones.) ``attributes``: the
    attribute keys of every line (an export gives the union over its range); default: those of
    ``rows``.
    """
    names = attribute_names(rows) if attributes is None else attributes
    # Line by line into one buffer: no list of records, no joined text beside its bytes.
    body = io.BytesIO()
    split_like = []
    for row in rows:
        if row.status != COMPLETED:
            continue
        record = metadata_record(partition, row, names)
        body.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
        if _SPLIT_WORD.search(record["file_name"]):
            split_like.append(record["file_name"])
    if split_like:
        log.warning(
            "partition %s: %d image names (e.g. %s) hold a split word (train, test, val, ...): "
            "datasets' load_dataset('imagefolder', data_dir=...) would guess splits from them; "
            "load with data_files='partition=*/*' instead",
            partition,
            len(split_like),
            split_like[0],
        )
    return store.write_atomic(metadata_path(partition), body.getvalue())


def stored_metadata_keys(store: ObjectStore, partition: str) -> list[str] | None:
    """The keys of the first line of the partition's stored ``metadata.jsonl``; None when it
    has none (no file, or no COMPLETED row)."""
    try:
        with store.fs.open(store.path(metadata_path(partition)), "rb") as f:
            first = f.readline()
    except FileNotFoundError:
        return None
    return list(json.loads(first)) if first.strip() else None


def previous_partition(store: ObjectStore, partition: str) -> str | None:
    """The latest partition before ``partition`` that has a lineage file, or None."""
    keys = (lineage_partition(path) for path in store.list(LINEAGE_DIR))
    return max((k for k in keys if k is not None and k < partition), default=None)


def key_difference(keys: Sequence[str], previous: Sequence[str]) -> str | None:
    """What a partition's metadata keys add to and lack from the previous partition's, or None
    when they are the same set."""
    added = [k for k in keys if k not in previous]
    lacking = [k for k in previous if k not in keys]
    if not added and not lacking:
        return None
    parts = [
        f"adds {', '.join(added)}" if added else "",
        f"lacks {', '.join(lacking)}" if lacking else "",
    ]
    return "; ".join(p for p in parts if p)

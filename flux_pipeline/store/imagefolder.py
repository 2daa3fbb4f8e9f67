"""``metadata.jsonl`` beside each partition's images: the folder is a Hugging Face imagefolder.

``datasets.load_dataset("imagefolder", data_dir=ROOT + "/images")`` then loads every partition
with its prompt and seed, and ``data_files`` globs (``partition=2024-01-*/*``) choose
partitions. Because metadata files are present, ``datasets`` adds no ``label`` column from the
``partition=KEY`` folder names, and those names match none of its split words, so everything
is one ``train`` split. Image file names can: ``datasets`` guesses splits from file names too
(``test-7.jpg``, ``cat_val-3.jpg``), so such names are warned about; loading with
``data_files`` never guesses.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Sequence
from typing import Any, Final

from flux_pipeline.protocol import COMPLETED
from flux_pipeline.store.layout import metadata_path
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
)
#: A file name in which ``datasets`` (data_dir= without data_files=) sees a split name.
_SPLIT_WORD: Final = re.compile(
    r"(?:^|[-._ 0-9])(?:train|training|validation|valid|dev|val|test|testing|eval|evaluation)"
    r"[-._ 0-9]"
)


def metadata_record(partition: str, row: LineageRow) -> dict[str, Any]:
    """One ``metadata.jsonl`` line of a COMPLETED row: its image's file name, then lineage."""
    if row.image_uri is None:
        raise ValueError(f"partition {partition}, prompt_id {row.prompt_id!r}: no image_uri")
    record: dict[str, Any] = {
        "file_name": row.image_uri.rsplit("/", 1)[-1],
        "partition": partition,
    }
    record.update((name, getattr(row, name)) for name in METADATA_FIELDS)
    return record


def write_imagefolder_metadata(
    store: ObjectStore, partition: str, rows: Sequence[LineageRow]
) -> str:
    """Replace ``images/partition=KEY/metadata.jsonl`` atomically; return its URI.

    One line per COMPLETED row of ``rows``, in row order, with its ``backend``; FAILED rows have
    no image and no line. (A build lists every row it made; ``flux-pipeline export imagefolder``
    passes only the rows a service made unless asked for synthetic ones.)
    """
    # Line by line into one buffer: no list of records, no joined text beside its bytes.
    body = io.BytesIO()
    split_like = []
    for row in rows:
        if row.status != COMPLETED:
            continue
        record = metadata_record(partition, row)
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

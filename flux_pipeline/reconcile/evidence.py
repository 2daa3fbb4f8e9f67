"""What our side knows of the requests made for one backend: every request id its ledger lines
or the lineage name, the partition each was made for, and where each stored image is (images
of other backends included: the record of this one bills none of them).

Read from the store alone (no API call); the lineage is only read, never rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from flux_pipeline.protocol import COMPLETED
from flux_pipeline.store.ledger import Ledger, LedgerEntry
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.storage import ObjectStore

#: The lineage columns read (a projection).
LINEAGE_INPUTS = (
    "partition",
    "request_id",
    "request_key",
    "status",
    "image_uri",
    "cached",
    "backend",
    "submitted_at",
)


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An image kept for a request: its key, the partition it was made for, its URI."""

    request_key: str
    partition: str | None
    image_uri: str | None
    #: When the accepted submit was sent (client clock), where known.
    submitted_at: datetime | None = None
    #: Only the ledger says so (the partition's lineage is not written yet).
    ledger_only: bool = False


@dataclass
class Evidence:
    """Our side of the bill for one backend."""

    #: Images kept, by the request id that made them.
    stored: dict[str, StoredImage] = field(default_factory=dict)
    #: Every request id our ledgers or lineage name, with its request key.
    known: dict[str, str] = field(default_factory=dict)
    #: The partition a request id was sent for, where a ledger line says.
    partitions: dict[str, str] = field(default_factory=dict)
    #: The newest ledger entry of each request key.
    latest: dict[str, LedgerEntry] = field(default_factory=dict)


def gather(store: ObjectStore, backend: str) -> Evidence:
    """Read the backend's ledger (every line kept) and every partition's lineage."""
    evidence = Evidence()
    for key, lines in Ledger(store, backend).every_line().items():
        evidence.latest[key] = lines[-1]
        for entry in lines:
            if entry.request_id:
                evidence.known[entry.request_id] = key
                if entry.partition:
                    evidence.partitions[entry.request_id] = entry.partition
        newest = lines[-1]
        if newest.state == COMPLETED and newest.request_id and newest.image_path:
            evidence.stored[newest.request_id] = StoredImage(
                key,
                newest.generated_for,
                store.uri(newest.image_path),
                newest.submitted_at,
                ledger_only=True,
            )
    lineage = read_lineage(store, LINEAGE_INPUTS)
    named = lineage[lineage["request_id"].notna()]
    for row in named[named["backend"] == backend].itertuples(index=False):
        evidence.known.setdefault(str(row.request_id), str(row.request_key))
    kept = named[named["status"] == COMPLETED].sort_values(["cached", "partition"])
    records: list[dict[Any, Any]] = kept.drop_duplicates("request_id").to_dict("records")
    for record in records:
        when = record["submitted_at"]
        submitted = when.to_pydatetime() if isinstance(when, pd.Timestamp) else None
        evidence.stored[str(record["request_id"])] = StoredImage(
            str(record["request_key"]),
            str(record["partition"]),
            str(record["image_uri"]),
            submitted,
        )
    return evidence

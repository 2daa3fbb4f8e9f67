"""Per-request state under ``_ledger/{request_key}.json``: resume and cache, shared by partitions.

An entry goes ``SUBMITTED`` (the service accepted the job: its ``request_id`` is kept so a
restarted run re-attaches instead of paying again) then ``COMPLETED`` (the image is stored:
the entry carries its lineage fields) or ``FAILED`` (a non-retryable failure, reused as is).
Every write is one atomic object write, durable when the method returns.

A finished entry names the partition the generation was made for (``partition``: the one whose
build stored the outcome first). It never changes, even when ``image_path`` is later pointed at
another partition's surviving copy; it is what makes a reused lineage row ``cached`` (made for
another partition) or not (this partition's own generation, rebuilt).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from flux_pipeline.lineage import LineageRow
from flux_pipeline.storage import ObjectStore

LEDGER_DIR: Final = "_ledger"
SUBMITTED: Final = "SUBMITTED"
_KEY = re.compile(r"[0-9a-f]{64}")
_IMAGE_PARTITION = re.compile(r"images/partition=([^/]+)/")

State = Literal["SUBMITTED", "COMPLETED", "FAILED"]


@dataclass(frozen=True)
class LedgerEntry:
    request_key: str
    state: State
    request_id: str | None
    submitted_at: datetime | None
    #: The finished row (COMPLETED/FAILED); ``image_path`` is the image's path under the root.
    lineage: LineageRow | None = None
    image_path: str | None = None
    #: The partition the generation was made for (finished entries; see the module).
    partition: str | None = None

    @property
    def generated_for(self) -> str | None:
        """``partition``, or for an entry written before it was recorded, the partition folder
        of ``image_path``; None when neither says."""
        if self.partition is not None:
            return self.partition
        found = _IMAGE_PARTITION.match(self.image_path or "")
        return found.group(1) if found else None


class Ledger:
    """Reads and writes ledger entries in an :class:`ObjectStore`."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def record_submitted(
        self, request_key: str, request_id: str, submitted_at: datetime | None = None
    ) -> None:
        """Keep an accepted job's id: fits the engine hook ``on_submitted(key, request_id)``."""
        when = submitted_at or datetime.now(UTC)
        self._write(
            request_key,
            {"state": SUBMITTED, "request_id": request_id, "submitted_at": when.isoformat()},
        )

    def record_finished(
        self,
        request_key: str,
        lineage_fields: LineageRow,
        image_path: str | None = None,
        partition: str | None = None,
    ) -> None:
        """Keep a finished outcome: COMPLETED with its stored image, or a final FAILED.

        ``image_path`` (relative to the root) defaults to the path of ``image_uri``;
        ``partition`` is the partition the generation was made for.
        """
        if lineage_fields.status not in ("COMPLETED", "FAILED"):
            raise ValueError(f"not a finished status: {lineage_fields.status!r}")
        if lineage_fields.status == "COMPLETED" and image_path is None:
            image_path = self.store.relpath(lineage_fields.image_uri or "")
            if image_path is None:
                raise ValueError("a COMPLETED entry needs an image stored under this root")
        self._write(
            request_key,
            {
                "state": lineage_fields.status,
                "request_id": lineage_fields.request_id,
                "submitted_at": _iso(lineage_fields.submitted_at),
                "image_path": image_path,
                "partition": partition,
                "lineage": lineage_fields.to_json(),
            },
        )

    def get(self, request_key: str) -> LedgerEntry | None:
        return self.get_many([request_key]).get(request_key)

    def get_many(self, request_keys: Iterable[str]) -> dict[str, LedgerEntry]:
        """The entries that exist among ``request_keys`` (read concurrently on S3)."""
        paths = {self._path(k): k for k in request_keys}
        found = self.store.read_many(paths)
        return {paths[p]: _entry(paths[p], data) for p, data in found.items()}

    def _path(self, request_key: str) -> str:
        if not _KEY.fullmatch(request_key):
            raise ValueError(f"not a request key (sha256 hex): {request_key!r}")
        return f"{LEDGER_DIR}/{request_key}.json"

    def _write(self, request_key: str, body: dict[str, object]) -> None:
        payload = {"request_key": request_key, **body}
        self.store.write_atomic(self._path(request_key), json.dumps(payload).encode())


def _entry(request_key: str, data: bytes) -> LedgerEntry:
    body = json.loads(data)
    submitted = body.get("submitted_at")
    lineage = body.get("lineage")
    return LedgerEntry(
        request_key=request_key,
        state=body["state"],
        request_id=body.get("request_id"),
        submitted_at=datetime.fromisoformat(submitted) if submitted else None,
        lineage=LineageRow.from_json(lineage) if lineage else None,
        image_path=body.get("image_path"),
        partition=body.get("partition"),
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None

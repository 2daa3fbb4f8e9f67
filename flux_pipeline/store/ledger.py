"""Per-request state under ``_ledger/{backend}/{request_key}.json``: resume and cache, shared by
partitions, kept per backend (:mod:`flux_pipeline.store.provenance`).

An entry goes ``SENDING`` (a submit is about to go out: its send time and partition, so a run
that dies before the answer is resolved from the account's record on restart), ``SUBMITTED``
(the job's ``request_id``, so a restarted run re-attaches instead of paying again) then
``COMPLETED`` (the image is stored; the entry carries its lineage fields) or ``FAILED`` (final,
reused as is). Every write is durable when the method returns and readers never see a torn
entry (:meth:`ObjectStore.write_record`). A finished entry names the partition the generation was
made for, which never changes: it is what makes a reused row ``cached``.

Reading many entries lists the folder first, so a key with no entry costs no read; the listing
goes on only while each page spares at least :data:`SPARED_PER_PAGE` reads. A ledger reads one
backend's folder: entries at ``_ledger/{request_key}.json`` name no backend and are not read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from flux_pipeline.store.backend import PAGE_NAMES
from flux_pipeline.store.layout import image_partition, ledger_dir, ledger_path
from flux_pipeline.store.lineage import LineageRow
from flux_pipeline.store.storage import ObjectStore, last_record

SUBMITTED: Final = "SUBMITTED"
SENDING: Final = "SENDING"
#: Reads of missing entries a listing page must spare for the listing to go on: on AWS S3 a
#: ``LIST`` is priced like 12.5 ``GET``s, so listing never costs more than the reads it saves.
SPARED_PER_PAGE: Final = 12
#: Keys asked for at once from which the folder is listed first.
LIST_FROM: Final = 2 * SPARED_PER_PAGE

State = Literal["SENDING", "SUBMITTED", "COMPLETED", "FAILED"]


@dataclass(frozen=True, slots=True)
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
        return image_partition(self.image_path or "")


class Ledger:
    """Reads and writes one backend's ledger entries in an :class:`ObjectStore`."""

    def __init__(self, store: ObjectStore, backend: str) -> None:
        self.store = store
        self.backend = backend
        self.folder = ledger_dir(backend)

    def record_sending(
        self, request_key: str, sent_at: datetime, partition: str | None = None
    ) -> None:
        """Keep the time a submit goes out, before it does (and the partition it is for): fits
        the engine hook ``on_sending(key, sent_at)``."""
        body: dict[str, object] = {
            "state": SENDING,
            "submitted_at": sent_at.isoformat(),
            "partition": partition,
        }
        self._write(request_key, body)

    def record_submitted(
        self,
        request_key: str,
        request_id: str,
        submitted_at: datetime | None = None,
        partition: str | None = None,
    ) -> None:
        """Keep an accepted job's id (and the partition it is for): fits the engine hook
        ``on_submitted(key, request_id)``."""
        when = submitted_at or datetime.now(UTC)
        body: dict[str, object] = {
            "state": SUBMITTED,
            "request_id": request_id,
            "submitted_at": when.isoformat(),
            "partition": partition,
        }
        self._write(request_key, body)

    def every_line(self) -> dict[str, list[LedgerEntry]]:
        """Every state each entry of this backend went through, oldest first, by request key
        (where the store keeps them: a local folder appends, S3 keeps the newest only)."""
        paths = self.store.list(self.folder)
        found = self.store.read_many(paths)
        lines: dict[str, list[LedgerEntry]] = {}
        for data in found.values():
            entries = [_entry_of(json.loads(line)) for line in _whole_lines(data)]
            if entries:
                lines[entries[-1].request_key] = entries
        return lines

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
        if lineage_fields.backend != self.backend:
            raise ValueError(
                f"a row generated by {lineage_fields.backend!r} is not {self.backend!r}'s to keep"
            )
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
        """The entries that exist among ``request_keys`` (read concurrently on S3); from
        :data:`LIST_FROM` keys on, only those a listing names or did not reach are read."""
        keys = sorted(set(request_keys))
        if len(keys) >= LIST_FROM:
            keys = self._listed(keys)
        paths = {self._path(k): k for k in keys}
        found = self.store.read_many(paths)
        return {paths[p]: _entry(paths[p], data) for p, data in found.items()}

    def _listed(self, keys: list[str]) -> list[str]:
        """The keys of ``keys`` (sorted) that may have an entry: those the folder's listing
        names, and those it did not reach before it stopped paying for itself."""
        files = [self._path(k).rsplit("/", 1)[1] for k in keys]  # sorted as the keys are
        may_exist: list[str] = []
        settled = spared = 0
        for pages, page in enumerate(self.store.name_pages(self.folder), start=1):
            names = set(page)
            last = page[-1] if page else ""
            while settled < len(keys) and files[settled] <= last:
                if files[settled] in names:
                    may_exist.append(keys[settled])
                else:
                    spared += 1
                settled += 1
            if len(page) >= PAGE_NAMES and spared < pages * SPARED_PER_PAGE:
                return may_exist + keys[settled:]
        return may_exist  # the whole folder was listed: an unnamed key has no entry

    def _path(self, request_key: str) -> str:
        return ledger_path(self.backend, request_key)

    def _write(self, request_key: str, body: dict[str, object]) -> None:
        payload = {"request_key": request_key, "backend": self.backend, **body}
        self.store.write_record(self._path(request_key), json.dumps(payload).encode())


def _whole_lines(data: bytes) -> list[bytes]:
    """The whole records of an entry's object, oldest first (see :func:`last_record`)."""
    lines = data.split(b"\n")
    if len(lines) > 1 and not data.endswith(b"\n"):
        lines = lines[:-1]  # a tail without a newline is an append torn by a crash
    return [line for line in lines if line.strip()]


def _entry(request_key: str, data: bytes) -> LedgerEntry:
    return _entry_of(json.loads(last_record(data)), request_key)


def _entry_of(body: dict[str, Any], request_key: str | None = None) -> LedgerEntry:
    submitted = body.get("submitted_at")
    lineage = body.get("lineage")
    return LedgerEntry(
        request_key=request_key or str(body["request_key"]),
        state=body["state"],
        request_id=body.get("request_id"),
        submitted_at=datetime.fromisoformat(submitted) if submitted else None,
        lineage=LineageRow.from_json(lineage) if lineage else None,
        image_path=body.get("image_path"),
        partition=body.get("partition"),
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None

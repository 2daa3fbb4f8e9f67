"""What the store answered when each image of a partition was written: its tag (the S3 ``ETag``).

``_receipts/partition=KEY.json`` maps an image's path to the ``etag`` the store gave the version
a build wrote and the ``sha256`` the build hashed from the same bytes. S3 checks an upload's
bytes on arrival and gives any later write of the object a new ``ETag`` unless its bytes are the
same, so an object whose listed ``ETag`` still equals its receipt holds the bytes its receipt
names. The integrity check then verifies a partition with one listing and one read of this file;
an image without a matching receipt is read back and hashed.

A local folder gives no tag: no receipts are kept there, and its images are always read back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flux_pipeline.store.layout import images_dir, receipts_path
from flux_pipeline.store.storage import ObjectStore

__all__ = ["Receipt", "keep_receipts", "verified_by_receipts"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Receipt:
    """One image as written: the store's tag of that version and the sha256 of its bytes."""

    etag: str
    sha256: str


def keep_receipts(store: ObjectStore, partition: str, new: Mapping[str, Receipt]) -> None:
    """Add ``new`` (image path -> receipt) to the partition's receipts (one read, one write);
    nothing is read or written when there is nothing new."""
    if not new:
        return
    path = receipts_path(partition)
    kept = _read(store, partition)
    kept.update(new)
    body = {p: {"etag": r.etag, "sha256": r.sha256} for p, r in sorted(kept.items())}
    store.write_atomic(path, json.dumps(body).encode())


def verified_by_receipts(
    store: ObjectStore, partition: str, images: Iterable[tuple[str, str, int]]
) -> set[str]:
    """The paths among ``images`` (path, sha256, size) whose stored object still is the version
    its receipt names, with that sha256 and size: they need not be read back."""
    wanted = list(images)
    if not wanted:
        return set()
    kept = _read(store, partition)
    if not kept:
        return set()
    listed = store.listing(images_dir(partition))
    verified = set()
    for path, sha256, size in wanted:
        receipt, found = kept.get(path), listed.get(path)
        if receipt is None or found is None or receipt.sha256 != sha256:
            continue
        if found == (size, receipt.etag):
            verified.add(path)
    return verified


def _read(store: ObjectStore, partition: str) -> dict[str, Receipt]:
    found = store.read_many([receipts_path(partition)])
    if not found:
        return {}
    try:
        body = json.loads(next(iter(found.values())))
        return {p: Receipt(str(r["etag"]), str(r["sha256"])) for p, r in body.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # Never trusted then: every image of the partition is read back instead.
        log.warning("unreadable %s (%s): ignored", store.uri(receipts_path(partition)), exc)
        return {}

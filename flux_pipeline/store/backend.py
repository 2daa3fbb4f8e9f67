"""What one kind of filesystem does for an :class:`~flux_pipeline.store.storage.ObjectStore`.

A :class:`StorageBackend` (where objects are kept; not the generation backend of
:mod:`.provenance`) holds the primitives whose local and S3 behaviours differ: atomic write,
exclusive create, in-place append, tagged read, compare-and-swap, copy, sha256, URIs and staging
cleanup. Its paths are filesystem paths under its root (no protocol), already checked by the
store, which adds retries, request counts of the operations shared by every filesystem, and
listing.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

#: Bytes read at a time when an object is hashed.
HASH_CHUNK: Final = 1 << 20
#: Names one listing request returns at most (S3's ``ListObjectsV2`` page).
PAGE_NAMES: Final = 1000


@dataclass(frozen=True)
class Tagged:
    """An object's bytes with a tag that changes whenever the object is replaced.

    The tag is the S3 ``ETag``, or locally the sha256 of the bytes: two versions with the same
    bytes share a tag, so objects swapped with :meth:`ObjectStore.replace_if` should never repeat
    their bytes (claims carry an owner id and a timestamp).
    """

    data: bytes
    tag: str
    #: When this version was written, by the store's clock (file mtime, S3 ``LastModified``).
    modified: datetime


class RequestCounter:
    """Requests by verb, safe to count from many threads."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, verb: str, n: int = 1) -> None:
        with self._lock:
            self._counts[verb] += n

    def snapshot(self) -> dict[str, int]:
        """The counts so far, by verb."""
        with self._lock:
            return dict(self._counts)


class StorageBackend(Protocol):
    """The primitives of one kind of filesystem (local folder, S3, any other fsspec one)."""

    #: The fsspec filesystem, for the operations every kind shares.
    fs: Any
    #: The root's filesystem path, without a trailing ``/``.
    root: str
    #: Requests made through this backend, by verb.
    requests: RequestCounter
    #: Read options that fetch an object in one request (one version, never torn).
    one_get: Mapping[str, Any]

    def count(self, verb: str, n: int = 1) -> None:
        """Count a request the filesystem does not count itself (a local stand-in)."""

    def uri(self, path: str) -> str:
        """The full URI of a filesystem path."""

    def strip(self, uri: str) -> str:
        """The filesystem path of a URI."""

    def write(self, path: str, data: bytes) -> str | None:
        """Write ``data`` so that readers never see a partial object; return the tag the
        filesystem gave this version (the S3 ``ETag``), or None where it names none."""

    def create(self, path: str, data: bytes) -> bool:
        """Create the object only if it does not exist: True if this call created it."""

    def append(self, path: str, line: bytes) -> bool:
        """Append ``line`` (newline-terminated) to the existing object in place, durably: True
        if it was appended; False where it cannot be (the caller then writes it whole)."""

    def read_tagged(self, path: str) -> Tagged | None:
        """The object's bytes and tag, or None if it does not exist."""

    def replace_if(self, path: str, data: bytes, tag: str) -> bool:
        """Replace the object only if it still has ``tag``: True if this call replaced it."""

    def copy(self, src: str, dest: str) -> None:
        """Copy one object atomically; a missing source raises FileNotFoundError."""

    def sha256(self, path: str) -> str:
        """The sha256 hex digest of one object, read in chunks."""

    def name_pages(self, folder: str) -> Iterator[list[str]]:
        """Names of the objects directly in ``folder``, sorted, one listing request (up to
        :data:`PAGE_NAMES` names) at a time; a missing folder lists as one empty page."""

    def clean_staging(self, older_than: float) -> int:
        """Remove staging files older than ``older_than`` seconds; return how many."""


def pages_of(names: list[str]) -> Iterator[list[str]]:
    """``names`` (sorted) in pages of :data:`PAGE_NAMES`; no names are one empty page."""
    for start in range(0, max(len(names), 1), PAGE_NAMES):
        yield names[start : start + PAGE_NAMES]


def fs_sha256(fs: Any, path: str) -> str:
    """The sha256 hex digest of a file of an fsspec filesystem, read in chunks."""
    digest = hashlib.sha256()
    with fs.open(path, "rb", block_size=HASH_CHUNK) as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()

"""Object storage under one fsspec root: a local folder or ``s3://bucket/prefix``.

Every write is atomic: readers see the old object or the new one, never a torn one. How, and
how the other primitives work, is the business of the backend :meth:`ObjectStore.from_uri`
chooses once (:mod:`.local_backend`, :mod:`.s3_backend`). Transient write failures are retried
with backoff; what still fails raises :class:`StorageError`.

Every store counts the requests it makes, by verb (:attr:`ObjectStore.requests`): on S3 each
call s3fs makes to the S3 API (``PUT``, ``GET``, ``HEAD``, ``LIST``, ``COPY``, ``DELETE``), locally
the same verbs for the file operations that stand in for them.

Many runs may share one root at once. Listings skip ``_tmp/`` and tolerate objects that vanish
while they are listed; reads take one consistent version of an object (one ``GET`` on S3);
:meth:`ObjectStore.create_exclusive` and :meth:`ObjectStore.replace_if` let runs coordinate
through objects (``O_EXCL``-style creation and compare-and-swap).
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from flux_pipeline.settings.environment import FLUX_STORAGE_ROOT
from flux_pipeline.store.backend import StorageBackend, Tagged
from flux_pipeline.store.layout import TMP_DIR
from flux_pipeline.store.local_backend import LocalBackend
from flux_pipeline.store.s3_backend import FsspecBackend, S3Backend

__all__ = ["DEFAULT_ROOT", "ObjectStore", "StorageError", "Tagged", "WriteRetry", "last_record"]

DEFAULT_ROOT = FLUX_STORAGE_ROOT.default

T = TypeVar("T")
#: One page of a listing: object names, sorted (``ObjectStore.list`` shadows ``list`` below).
Page = list[str]


class StorageError(OSError):
    """An object could not be written or copied, even after retries."""


@dataclass(frozen=True)
class WriteRetry:
    """How often and how patiently a failed write is tried again (full-jitter backoff)."""

    attempts: int = 5
    base: float = 0.25
    cap: float = 5.0


def last_record(data: bytes) -> bytes:
    """The newest whole record of an object written by :meth:`ObjectStore.write_record`: its
    last newline-terminated line (a tail without a newline is an append torn by a crash); an
    object without a newline (written whole, before records were appended) is one record."""
    if not data.endswith(b"\n"):
        cut = data.rfind(b"\n")
        if cut < 0:
            return data
        data = data[:cut]
    data = data.rstrip(b"\n")
    return data[data.rfind(b"\n") + 1 :]


def _etag(info: dict[str, Any]) -> str | None:
    etag = info.get("ETag") or info.get("etag")
    return str(etag).strip('"') if etag else None


def _check_relpath(relpath: str) -> str:
    if any(part in ("", ".", "..") or "\\" in part for part in relpath.split("/")):
        raise ValueError(f"not a safe relative storage path: {relpath!r}")
    return relpath


class ObjectStore:
    """Objects under one root, named by relative POSIX paths like ``images/partition=K/x.jpg``.

    One concern, the store's primitives over one root: each method checks its path, hands the
    work to the backend :meth:`from_uri` chose, and retries writes. It is long because the
    primitives are many (atomic, exclusive and compare-and-swap writes, batched reads, listings
    with sizes and tags); how each is done per backend lives in :mod:`.local_backend` and
    :mod:`.s3_backend`, the layout of the root in :mod:`.layout`.
    """

    def __init__(self, backend: StorageBackend, *, retry: WriteRetry | None = None) -> None:
        self._backend = backend
        self.fs = backend.fs
        self.root = backend.root
        self.retry = retry or WriteRetry()
        self.is_local = isinstance(backend, LocalBackend)
        self.is_s3 = isinstance(backend, S3Backend)
        #: Requests this store made, by verb (see the module).
        self.requests = backend.requests

    @classmethod
    def from_uri(
        cls, uri: str | None = None, *, create: bool = True, **storage_options: Any
    ) -> ObjectStore:
        """Open ``uri`` (default ``./data``, made absolute); S3 options come from the AWS variables.

        A local root is created unless ``create`` is false (a reader that must write nothing:
        a missing root then reads as empty).

        s3fs (through botocore) reads ``AWS_ENDPOINT_URL`` and the credential variables itself.
        Listing caches are off so that ``exists``/``list`` always ask the server.
        """
        uri = uri or DEFAULT_ROOT
        if "://" not in uri or uri.startswith("file://"):
            root = os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))
            if create:
                os.makedirs(root, exist_ok=True)
            return cls(LocalBackend(root))
        if uri.startswith(("s3://", "s3a://")):
            storage_options.setdefault("use_listings_cache", False)
            storage_options.setdefault("skip_instance_cache", True)
        fs, root = fsspec.core.url_to_fs(uri, **storage_options)
        protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        backend: StorageBackend
        if isinstance(fs, LocalFileSystem):
            backend = LocalBackend(root, fs)
        elif "s3" in protocols:
            backend = S3Backend(fs, root)
        else:
            backend = FsspecBackend(fs, root)
        return cls(backend)

    def __repr__(self) -> str:
        return f"ObjectStore({self.uri('')!r})"

    def path(self, relpath: str) -> str:
        """The filesystem path (no protocol) of ``relpath``."""
        return f"{self.root}/{_check_relpath(relpath)}"

    def uri(self, relpath: str) -> str:
        """The full URI: an absolute local path, or ``s3://bucket/prefix/...``."""
        return self._backend.uri(self.path(relpath) if relpath else self.root)

    def relpath(self, uri: str) -> str | None:
        """The relative path of a URI under this root, or None if it lies elsewhere."""
        stripped = self._backend.strip(uri)
        prefix = self.root + "/"
        return stripped[len(prefix) :] if stripped.startswith(prefix) else None

    def write_atomic(self, relpath: str, data: bytes) -> str:
        """Write ``data`` so that readers never see a partial object; return its URI.

        Locally the file is fsynced before the rename and the directory after it, so the write
        is durable when this returns.
        """
        return self.write_tagged(relpath, data)[0]

    def write_tagged(self, relpath: str, data: bytes) -> tuple[str, str | None]:
        """:meth:`write_atomic`, also returning the tag the store gave this version (the S3
        ``ETag``, as a listing shows it; None on a local folder)."""
        dest = self.path(relpath)
        self._backend.count("PUT")
        tag = self._retrying(relpath, lambda: self._backend.write(dest, data))
        return self.uri(relpath), tag

    def write_record(self, relpath: str, record: bytes) -> None:
        """Make ``record`` (one line, no newline) the object's newest record, durably; a reader
        takes it with :func:`last_record`.

        Locally the line is appended to the existing file (one write and fsync: no new file, no
        rename); a new object, one grown past ``APPEND_MAX``, or one on S3 is written atomically
        with this record alone. A reader never sees a torn record: it sees this one or the one
        before, and an append torn by a crash reads as the record before it.
        """
        if b"\n" in record:
            raise ValueError("a record is one line")
        dest, line = self.path(relpath), record + b"\n"
        self._backend.count("PUT")
        self._retrying(
            relpath, lambda: self._backend.append(dest, line) or self._backend.write(dest, line)
        )

    def create_exclusive(self, relpath: str, data: bytes) -> bool:
        """Create the object only if it does not exist: True if this call created it.

        Locally the bytes are staged and fsynced, then ``os.link``-ed into place (atomic, fails
        if the name exists), so a reader never sees a partial object. On S3 it is one ``PUT``
        with ``If-None-Match: *`` (s3fs ``mode="create"``): the server admits one creator.
        A ``PUT`` whose answer was lost and that is retried reports False although it created
        the object: callers that must know compare the content (claims do).
        """
        dest = self.path(relpath)
        self._backend.count("PUT")
        return self._retrying(
            relpath, lambda: self._backend.create(dest, data), (NotImplementedError,)
        )

    def read_tagged(self, relpath: str) -> Tagged | None:
        """The object's bytes and tag (one ``GET`` on S3), or None if it does not exist."""
        dest = self.path(relpath)
        self._backend.count("GET")
        return self._backend.read_tagged(dest)

    def replace_if(self, relpath: str, data: bytes, tag: str) -> bool:
        """Replace the object only if it still has ``tag``: True if this call replaced it.

        On S3 this is one ``PUT`` with ``If-Match: <ETag>``. Locally it runs under an exclusive
        ``flock`` of ``.cas-lock`` in the object's folder (plus a thread lock): read, compare,
        atomic rename of bytes staged beforehand. An object that no longer exists is never
        recreated.
        """
        dest = self.path(relpath)
        self._backend.count("PUT")
        return self._retrying(
            relpath, lambda: self._backend.replace_if(dest, data, tag), (NotImplementedError,)
        )

    def copy(self, src_relpath: str, dst_relpath: str) -> str:
        """Copy one object atomically (server-side on S3); return the destination URI.

        A missing source raises FileNotFoundError at once (never retried): another run may have
        removed it, and the caller decides what then.
        """
        src, dest = self.path(src_relpath), self.path(dst_relpath)
        self._backend.count("COPY")
        self._retrying(dst_relpath, lambda: self._backend.copy(src, dest), (FileNotFoundError,))
        return self.uri(dst_relpath)

    def read_bytes(self, relpath: str) -> bytes:
        self._backend.count("GET")
        data: bytes = self.fs.cat_file(self.path(relpath), **self._backend.one_get)
        return data

    def read_many(self, relpaths: Iterable[str]) -> dict[str, bytes]:
        """Read several objects at once (concurrently on S3); missing ones are left out.

        Any other failure raises: a ledger entry that cannot be read must never look absent.
        """
        by_path = {self.path(r): r for r in relpaths}
        if not by_path:
            return {}
        self._backend.count("GET", len(by_path))
        found: dict[str, bytes] = {}
        results = self.fs.cat(list(by_path), on_error="return", **self._backend.one_get)
        for path, data in results.items():
            if isinstance(data, FileNotFoundError):
                continue
            if isinstance(data, BaseException):
                raise data
            found[by_path[self.fs._strip_protocol(path)]] = data
        return found

    def sha256(self, relpath: str) -> str:
        """The sha256 hex digest of one object, read in chunks (memory flat in its size)."""
        dest = self.path(relpath)
        self._backend.count("GET")
        return self._backend.sha256(dest)

    def exists(self, relpath: str) -> bool:
        self._backend.count("HEAD")
        return bool(self.fs.exists(self.path(relpath)))

    def size(self, relpath: str) -> int:
        self._backend.count("HEAD")
        return int(self.fs.size(self.path(relpath)))

    def delete(self, relpath: str) -> None:
        """Remove one object; a missing one is not an error."""
        self._backend.count("DELETE")
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(relpath))

    def list(self, prefix: str = "") -> list[str]:
        """Relative paths of every object under ``prefix`` (recursive, sorted)."""
        return sorted(self.sizes(prefix))

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """``{relative path: size in bytes}`` of every object under ``prefix`` (one listing).

        Staging files (``_tmp/``) are not objects and are left out of a listing of the root;
        an object removed while the listing runs is left out too, never an error.
        """
        return {path: size for path, (size, _) in self.listing(prefix).items()}

    def listing(self, prefix: str = "") -> dict[str, tuple[int, str | None]]:
        """``{relative path: (size, tag)}`` of every object under ``prefix``, as
        :meth:`sizes` lists them; the tag is the S3 ``ETag`` (None on a local folder)."""
        return {path: (int(info["size"]), _etag(info)) for path, info in self._find(prefix).items()}

    def versions(self, prefix: str = "") -> dict[str, str]:
        """``{relative path: version}`` of every object under ``prefix`` (one listing): the
        S3 ``ETag``, else the size and modification time (an atomic replace changes both)."""
        return {
            path: _etag(info) or f"{info['size']}@{info.get('mtime', info.get('LastModified'))}"
            for path, info in self._find(prefix).items()
        }

    def _find(self, prefix: str) -> dict[str, dict[str, Any]]:
        whole_root = not prefix.strip("/")
        base = self.root if whole_root else self.path(prefix.rstrip("/"))
        self._backend.count("LIST")
        try:  # a missing prefix lists as empty (no HEAD first: one LIST per page)
            listed = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        start = len(self.root) + 1
        found = {p[start:]: info for p, info in listed.items()}
        if whole_root:
            found = {p: i for p, i in found.items() if not p.startswith(f"{TMP_DIR}/")}
        return found

    def name_pages(self, prefix: str) -> Iterator[Page]:
        """Names of the objects directly under ``prefix``, sorted, one page (one ``LIST``, up
        to 1,000 names) at a time, each asked for only when the caller wants it."""
        return self._backend.name_pages(self.path(prefix.rstrip("/")))

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Remove local staging files older than ``older_than`` seconds; return how many.

        Safe while other runs write under the same root (see
        :meth:`.LocalBackend.clean_staging`); a remote store stages nothing.
        """
        return self._backend.clean_staging(older_than)

    def _retrying(
        self,
        relpath: str,
        action: Callable[[], T],
        fatal: tuple[type[Exception], ...] = (),
    ) -> T:
        last: Exception | None = None
        for attempt in range(self.retry.attempts):
            if attempt:
                time.sleep(random.uniform(0, min(self.retry.cap, self.retry.base * 2**attempt)))
            try:
                return action()
            except fatal:
                raise
            except Exception as exc:  # s3fs and botocore raise more than OSError
                last = exc
        raise StorageError(
            f"could not write {self.uri(relpath)} after {self.retry.attempts} attempts: {last}"
        ) from last

"""Object storage under one fsspec root: a local folder or ``s3://bucket/prefix``.

Every write is atomic: a local write lands in ``_tmp/`` under the root and is moved into place
with ``os.replace`` (same filesystem, so readers see the old file or the new one, never a torn
one); an S3 ``PUT`` (or a multipart upload) only becomes visible once complete. Transient write
failures are retried with backoff; what still fails raises :class:`StorageError`.

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
import fcntl
import hashlib
import os
import random
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import fsspec
from fsspec.asyn import sync
from fsspec.implementations.local import LocalFileSystem

from flux_pipeline.store.layout import CAS_LOCK, TMP_DIR

DEFAULT_ROOT = "./data"
#: Bytes read at a time when an object is hashed.
_HASH_CHUNK = 1 << 20
#: The verb counted for each S3 API call s3fs makes (others count under their own name).
_S3_VERBS = {
    "put_object": "PUT",
    "create_multipart_upload": "PUT",
    "upload_part": "PUT",
    "complete_multipart_upload": "PUT",
    "get_object": "GET",
    "head_object": "HEAD",
    "list_objects_v2": "LIST",
    "list_objects": "LIST",
    "copy_object": "COPY",
    "upload_part_copy": "COPY",
    "delete_object": "DELETE",
    "delete_objects": "DELETE",
}

T = TypeVar("T")

#: flock excludes other processes; this excludes other threads when flock is emulated with
#: POSIX record locks (NFS), which do not exclude threads of one process.
_CAS_THREADS = threading.Lock()


class StorageError(OSError):
    """An object could not be written or copied, even after retries."""


@dataclass(frozen=True)
class WriteRetry:
    """How often and how patiently a failed write is tried again (full-jitter backoff)."""

    attempts: int = 5
    base: float = 0.25
    cap: float = 5.0


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


def _check_relpath(relpath: str) -> str:
    if any(part in ("", ".", "..") or "\\" in part for part in relpath.split("/")):
        raise ValueError(f"not a safe relative storage path: {relpath!r}")
    return relpath


def _precondition_failed(exc: BaseException) -> bool:
    """Whether an S3 error is a ``412 Precondition Failed`` (s3fs maps only some of them)."""
    if isinstance(exc, FileExistsError):
        return True
    response: dict[str, Any] = getattr(exc.__cause__, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return bool(status == 412 or response.get("Error", {}).get("Code") == "PreconditionFailed")


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


class ObjectStore:
    """Objects under one root, named by relative POSIX paths like ``images/partition=K/x.jpg``."""

    def __init__(self, fs: Any, root: str, *, retry: WriteRetry | None = None) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.retry = retry or WriteRetry()
        self.is_local = isinstance(fs, LocalFileSystem)
        self.is_s3 = "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        #: Requests this store made, by verb (see the module).
        self.requests = RequestCounter()
        if self.is_s3:
            self._count_s3_calls()

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
            return cls(LocalFileSystem(), root)
        if uri.startswith(("s3://", "s3a://")):
            storage_options.setdefault("use_listings_cache", False)
            storage_options.setdefault("skip_instance_cache", True)
        fs, root = fsspec.core.url_to_fs(uri, **storage_options)
        return cls(fs, root)

    def __repr__(self) -> str:
        return f"ObjectStore({self.uri('')!r})"

    def _count(self, verb: str, n: int = 1) -> None:
        """Count a local operation (S3 calls are counted where s3fs makes them)."""
        if self.is_local:
            self.requests.add(verb, n)

    def _count_s3_calls(self) -> None:
        """Count every S3 API call of this store's own s3fs instance (``_call_s3`` is the one
        door they all pass through)."""
        call = self.fs._call_s3

        async def counted(method: str, *args: Any, **kwargs: Any) -> Any:
            self.requests.add(_S3_VERBS.get(method, method))
            return await call(method, *args, **kwargs)

        self.fs._call_s3 = counted

    def path(self, relpath: str) -> str:
        """The filesystem path (no protocol) of ``relpath``."""
        return f"{self.root}/{_check_relpath(relpath)}"

    def uri(self, relpath: str) -> str:
        """The full URI: an absolute local path, or ``s3://bucket/prefix/...``."""
        path = self.path(relpath) if relpath else self.root
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def relpath(self, uri: str) -> str | None:
        """The relative path of a URI under this root, or None if it lies elsewhere."""
        stripped = self.fs._strip_protocol(uri) if not self.is_local else os.path.abspath(uri)
        prefix = self.root + "/"
        return stripped[len(prefix) :] if stripped.startswith(prefix) else None

    def write_atomic(self, relpath: str, data: bytes) -> str:
        """Write ``data`` so that readers never see a partial object; return its URI.

        Locally the file is fsynced before the rename and the directory after it, so the write
        is durable when this returns.
        """
        dest = self.path(relpath)
        self._count("PUT")
        if self.is_local:
            self._retrying(relpath, lambda: self._local_replace(dest, lambda f: f.write(data)))
        else:
            self._retrying(relpath, lambda: self.fs.pipe_file(dest, data))
        return self.uri(relpath)

    def create_exclusive(self, relpath: str, data: bytes) -> bool:
        """Create the object only if it does not exist: True if this call created it.

        Locally the bytes are staged and fsynced, then ``os.link``-ed into place (atomic, fails
        if the name exists), so a reader never sees a partial object. On S3 it is one ``PUT``
        with ``If-None-Match: *`` (s3fs ``mode="create"``): the server admits one creator.
        A ``PUT`` whose answer was lost and that is retried reports False although it created
        the object: callers that must know compare the content (claims do).
        """
        dest = self.path(relpath)
        self._count("PUT")
        if self.is_local:
            return self._retrying(relpath, lambda: self._local_create(dest, data))
        self._require_s3("an exclusive create")

        def put() -> bool:
            try:
                self.fs.pipe_file(dest, data, mode="create")
            except Exception as exc:
                if _precondition_failed(exc):
                    return False
                raise  # 409 ConditionalRequestConflict (concurrent creates) is retried
            return True

        return self._retrying(relpath, put)

    def read_tagged(self, relpath: str) -> Tagged | None:
        """The object's bytes and tag (one ``GET`` on S3), or None if it does not exist."""
        dest = self.path(relpath)
        self._count("GET")
        if self.is_local:
            try:
                with open(dest, "rb") as f:
                    data = f.read()
                    mtime = os.fstat(f.fileno()).st_mtime
            except FileNotFoundError:
                return None
            modified = datetime.fromtimestamp(mtime, UTC)
            return Tagged(data, hashlib.sha256(data).hexdigest(), modified)
        self._require_s3("a tagged read")
        try:
            tagged: Tagged = sync(self.fs.loop, _s3_get, self.fs, dest)
        except FileNotFoundError:
            return None
        return tagged

    def replace_if(self, relpath: str, data: bytes, tag: str) -> bool:
        """Replace the object only if it still has ``tag``: True if this call replaced it.

        On S3 this is one ``PUT`` with ``If-Match: <ETag>``. Locally it runs under an exclusive
        ``flock`` of ``.cas-lock`` in the object's folder (plus a thread lock): read, compare,
        atomic rename of bytes staged beforehand. An object that no longer exists is never
        recreated.
        """
        dest = self.path(relpath)
        self._count("PUT")
        if self.is_local:
            return self._retrying(relpath, lambda: self._local_replace_if(dest, data, tag))
        self._require_s3("a conditional replace")

        def put() -> bool:
            try:
                self.fs.pipe_file(dest, data, IfMatch=tag)
            except FileNotFoundError:
                return False
            except Exception as exc:
                if _precondition_failed(exc):
                    return False
                raise
            return True

        return self._retrying(relpath, put)

    def copy(self, src_relpath: str, dst_relpath: str) -> str:
        """Copy one object atomically (server-side on S3); return the destination URI.

        A missing source raises FileNotFoundError at once (never retried): another run may have
        removed it, and the caller decides what then.
        """
        src, dest = self.path(src_relpath), self.path(dst_relpath)
        self._count("COPY")
        if self.is_local:

            def copy_into(f: Any) -> None:
                with open(src, "rb") as source:  # one version, even if replaced meanwhile
                    shutil.copyfileobj(source, f)

            self._retrying(
                dst_relpath, lambda: self._local_replace(dest, copy_into), (FileNotFoundError,)
            )
        else:  # cp_file: one CopyObject, no listing of the source first
            self._retrying(dst_relpath, lambda: self.fs.cp_file(src, dest), (FileNotFoundError,))
        return self.uri(dst_relpath)

    def read_bytes(self, relpath: str) -> bytes:
        self._count("GET")
        data: bytes = self.fs.cat_file(self.path(relpath), **self._one_get)
        return data

    def read_many(self, relpaths: Iterable[str]) -> dict[str, bytes]:
        """Read several objects at once (concurrently on S3); missing ones are left out.

        Any other failure raises: a ledger entry that cannot be read must never look absent.
        """
        by_path = {self.path(r): r for r in relpaths}
        if not by_path:
            return {}
        self._count("GET", len(by_path))
        found: dict[str, bytes] = {}
        results = self.fs.cat(list(by_path), on_error="return", **self._one_get)
        for path, data in results.items():
            if isinstance(data, FileNotFoundError):
                continue
            if isinstance(data, BaseException):
                raise data
            found[by_path[self.fs._strip_protocol(path)]] = data
        return found

    def sha256(self, relpath: str) -> str:
        """The sha256 hex digest of one object, read in chunks (memory flat in its size)."""
        if self.is_s3:  # one GetObject, streamed (fs.open would ask for its size first)
            hexdigest: str = sync(self.fs.loop, _s3_sha256, self.fs, self.path(relpath))
            return hexdigest
        digest = hashlib.sha256()
        self._count("GET")
        with self.fs.open(self.path(relpath), "rb", block_size=_HASH_CHUNK) as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def exists(self, relpath: str) -> bool:
        self._count("HEAD")
        return bool(self.fs.exists(self.path(relpath)))

    def size(self, relpath: str) -> int:
        self._count("HEAD")
        return int(self.fs.size(self.path(relpath)))

    def delete(self, relpath: str) -> None:
        """Remove one object; a missing one is not an error."""
        self._count("DELETE")
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
        whole_root = not prefix.strip("/")
        base = self.root if whole_root else self.path(prefix.rstrip("/"))
        self._count("LIST")
        try:  # a missing prefix lists as empty (no HEAD first: one LIST per page)
            listed = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        start = len(self.root) + 1
        found = {p[start:]: int(info["size"]) for p, info in listed.items()}
        if whole_root:
            found = {p: n for p, n in found.items() if not p.startswith(f"{TMP_DIR}/")}
        return found

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Remove local staging files older than ``older_than`` seconds; return how many.

        Safe while other runs write under the same root: a live writer's staging file exists for
        the milliseconds of one write (its mtime moves while it is written), so a file older
        than an hour was left by a killed process; a file that vanishes while it is looked at
        (renamed into place by its writer) is skipped, never an error.
        """
        tmp_dir = os.path.join(self.root, TMP_DIR)
        if not self.is_local:
            return 0
        removed, cutoff = 0, time.time() - older_than
        try:
            entries = list(os.scandir(tmp_dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    @property
    def _one_get(self) -> dict[str, Any]:
        """Read options that fetch an S3 object in one ``GET`` (one version, never torn)."""
        return {} if self.is_local else {"max_concurrency": 1}

    def _require_s3(self, what: str) -> None:
        if not self.is_s3:
            raise NotImplementedError(f"{what} needs a local folder or S3, not {self.uri('')}")

    def _stage(self, dest: str, fill: Callable[[Any], object]) -> str:
        """Write a durable staging file for ``dest`` under ``_tmp/``; return its path."""
        tmp_dir = os.path.join(self.root, TMP_DIR)
        os.makedirs(tmp_dir, exist_ok=True)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = os.path.join(tmp_dir, f"{uuid.uuid4().hex}-{os.path.basename(dest)}")
        try:
            with open(tmp, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tmp

    def _local_replace(self, dest: str, fill: Callable[[Any], object]) -> None:
        tmp = self._stage(dest, fill)
        try:
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(os.path.dirname(dest))

    def _local_create(self, dest: str, data: bytes) -> bool:
        tmp = self._stage(dest, lambda f: f.write(data))
        try:
            os.link(tmp, dest)
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_dir(os.path.dirname(dest))
        return True

    def _local_replace_if(self, dest: str, data: bytes, tag: str) -> bool:
        tmp = self._stage(dest, lambda f: f.write(data))  # the slow part, outside the lock
        try:
            with self._cas_lock(os.path.dirname(dest)):
                try:
                    with open(dest, "rb") as f:
                        current = f.read()
                except FileNotFoundError:
                    return False
                if hashlib.sha256(current).hexdigest() != tag:
                    return False
                os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_dir(os.path.dirname(dest))
        return True

    @contextlib.contextmanager
    def _cas_lock(self, folder: str) -> Iterator[None]:
        os.makedirs(folder, exist_ok=True)
        with _CAS_THREADS:
            fd = os.open(os.path.join(folder, CAS_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

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


def _fsync_dir(folder: str) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def _s3_get(fs: Any, path: str) -> Tagged:
    """One ``GetObject``: the body, ETag and ``LastModified`` of the very version it returned
    (s3fs has no public call that returns them together)."""
    bucket, key, _ = fs.split_path(path)
    response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
    try:
        body: bytes = await response["Body"].read()
    finally:
        response["Body"].close()
    return Tagged(body, str(response["ETag"]), response["LastModified"])


async def _s3_sha256(fs: Any, path: str) -> str:
    """The sha256 of one object, from one streamed ``GetObject``."""
    bucket, key, _ = fs.split_path(path)
    response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
    digest = hashlib.sha256()
    try:
        while chunk := await response["Body"].read(_HASH_CHUNK):
            digest.update(chunk)
    finally:
        response["Body"].close()
    return digest.hexdigest()

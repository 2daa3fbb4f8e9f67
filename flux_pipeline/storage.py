"""Object storage under one fsspec root: a local folder or ``s3://bucket/prefix``.

Every write is atomic: a local write lands in ``_tmp/`` under the root and is moved into place
with ``os.replace`` (same filesystem, so readers see the old file or the new one, never a torn
one); an S3 ``PUT`` (or a multipart upload) only becomes visible once complete. Transient write
failures are retried with backoff; what still fails raises :class:`StorageError`.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

DEFAULT_ROOT = "./data"
TMP_DIR = "_tmp"

T = TypeVar("T")


class StorageError(OSError):
    """An object could not be written or copied, even after retries."""


@dataclass(frozen=True)
class WriteRetry:
    """How often and how patiently a failed write is tried again (full-jitter backoff)."""

    attempts: int = 5
    base: float = 0.25
    cap: float = 5.0


def _check_relpath(relpath: str) -> str:
    if any(part in ("", ".", "..") or "\\" in part for part in relpath.split("/")):
        raise ValueError(f"not a safe relative storage path: {relpath!r}")
    return relpath


class ObjectStore:
    """Objects under one root, named by relative POSIX paths like ``images/partition=K/x.jpg``."""

    def __init__(self, fs: Any, root: str, *, retry: WriteRetry | None = None) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.retry = retry or WriteRetry()
        self.is_local = isinstance(fs, LocalFileSystem)

    @classmethod
    def from_uri(cls, uri: str | None = None, **storage_options: Any) -> ObjectStore:
        """Open ``uri`` (default ``./data``, made absolute); S3 options come from the AWS variables.

        s3fs (through botocore) reads ``AWS_ENDPOINT_URL`` and the credential variables itself.
        Listing caches are off so that ``exists``/``list`` always ask the server.
        """
        uri = uri or DEFAULT_ROOT
        if "://" not in uri or uri.startswith("file://"):
            root = os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))
            os.makedirs(root, exist_ok=True)
            return cls(LocalFileSystem(), root)
        if uri.startswith(("s3://", "s3a://")):
            storage_options.setdefault("use_listings_cache", False)
            storage_options.setdefault("skip_instance_cache", True)
        fs, root = fsspec.core.url_to_fs(uri, **storage_options)
        return cls(fs, root)

    def __repr__(self) -> str:
        return f"ObjectStore({self.uri('')!r})"

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
        if self.is_local:
            self._retrying(relpath, lambda: self._local_replace(dest, lambda f: f.write(data)))
        else:
            self._retrying(relpath, lambda: self.fs.pipe_file(dest, data))
        return self.uri(relpath)

    def copy(self, src_relpath: str, dst_relpath: str) -> str:
        """Copy one object atomically (server-side on S3); return the destination URI."""
        src, dest = self.path(src_relpath), self.path(dst_relpath)
        if self.is_local:

            def copy_into(f: Any) -> None:
                with open(src, "rb") as source:
                    shutil.copyfileobj(source, f)

            self._retrying(dst_relpath, lambda: self._local_replace(dest, copy_into))
        else:
            self._retrying(dst_relpath, lambda: self.fs.copy(src, dest))
        return self.uri(dst_relpath)

    def read_bytes(self, relpath: str) -> bytes:
        data: bytes = self.fs.cat_file(self.path(relpath))
        return data

    def read_many(self, relpaths: Iterable[str]) -> dict[str, bytes]:
        """Read several objects at once (concurrently on S3); missing ones are left out.

        Any other failure raises: a ledger entry that cannot be read must never look absent.
        """
        by_path = {self.path(r): r for r in relpaths}
        if not by_path:
            return {}
        found: dict[str, bytes] = {}
        for path, data in self.fs.cat(list(by_path), on_error="return").items():
            if isinstance(data, FileNotFoundError):
                continue
            if isinstance(data, BaseException):
                raise data
            found[by_path[self.fs._strip_protocol(path)]] = data
        return found

    def exists(self, relpath: str) -> bool:
        return bool(self.fs.exists(self.path(relpath)))

    def size(self, relpath: str) -> int:
        return int(self.fs.size(self.path(relpath)))

    def delete(self, relpath: str) -> None:
        """Remove one object; a missing one is not an error."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(relpath))

    def list(self, prefix: str = "") -> list[str]:
        """Relative paths of every object under ``prefix`` (recursive, sorted)."""
        return sorted(self.sizes(prefix))

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """``{relative path: size in bytes}`` of every object under ``prefix`` (one listing)."""
        base = self.path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not self.fs.exists(base):
            return {}
        start = len(self.root) + 1
        found = self.fs.find(base, detail=True)
        return {path[start:]: int(info["size"]) for path, info in found.items()}

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Remove local staging files older than ``older_than`` seconds; return how many.

        Only a process killed mid-write leaves one behind (a write takes milliseconds).
        """
        tmp_dir = os.path.join(self.root, TMP_DIR)
        if not self.is_local or not os.path.isdir(tmp_dir):
            return 0
        removed, cutoff = 0, time.time() - older_than
        for entry in os.scandir(tmp_dir):
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def _local_replace(self, dest: str, fill: Callable[[Any], object]) -> None:
        tmp_dir = os.path.join(self.root, TMP_DIR)
        os.makedirs(tmp_dir, exist_ok=True)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = os.path.join(tmp_dir, f"{uuid.uuid4().hex}-{os.path.basename(dest)}")
        try:
            with open(tmp, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        dir_fd = os.open(os.path.dirname(dest), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _retrying(self, relpath: str, action: Callable[[], T]) -> T:
        last: Exception | None = None
        for attempt in range(self.retry.attempts):
            if attempt:
                time.sleep(random.uniform(0, min(self.retry.cap, self.retry.base * 2**attempt)))
            try:
                return action()
            except Exception as exc:  # s3fs and botocore raise more than OSError
                last = exc
        raise StorageError(
            f"could not write {self.uri(relpath)} after {self.retry.attempts} attempts: {last}"
        ) from last

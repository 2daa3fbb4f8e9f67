"""A local folder as a :class:`~flux_pipeline.store.backend.StorageBackend`.

A write is staged under ``_tmp/`` in the root (same filesystem), fsynced, and moved into place
with ``os.replace`` (readers see the old file or the new one, never a torn one), then the folder
is fsynced: durable when the call returns. An append writes to the file in place and fsyncs it:
no new file, no rename. An exclusive create ``os.link``-s the staged file
into place (atomic, fails if the name exists). Compare-and-swap runs under an exclusive
``flock`` of ``.cas-lock`` in the object's folder, plus a thread lock. File operations count as
the S3 requests they stand in for.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any, TypeVar

from fsspec.implementations.local import LocalFileSystem

from flux_pipeline.store.backend import RequestCounter, Tagged, fs_sha256, pages_of
from flux_pipeline.store.layout import CAS_LOCK, TMP_DIR

#: flock excludes other processes; this excludes other threads when flock is emulated with
#: POSIX record locks (NFS), which do not exclude threads of one process.
_CAS_THREADS = threading.Lock()

T = TypeVar("T")
#: A file is appended to up to this size; past it, it is rewritten whole (the caller's choice).
APPEND_MAX = 64 * 1024


class LocalBackend:
    """Objects as files under the folder ``root``."""

    one_get: Mapping[str, Any] = MappingProxyType({})

    def __init__(self, root: str, fs: LocalFileSystem | None = None) -> None:
        self.fs = fs or LocalFileSystem()
        self.root = root.rstrip("/")
        self.requests = RequestCounter()

    def count(self, verb: str, n: int = 1) -> None:
        self.requests.add(verb, n)

    def uri(self, path: str) -> str:
        return path

    def strip(self, uri: str) -> str:
        return os.path.abspath(uri)

    def write(self, path: str, data: bytes) -> None:
        """A file has no tag of its own."""
        self._replace(path, lambda f: f.write(data))

    def create(self, path: str, data: bytes) -> bool:
        tmp = self._stage(path, lambda f: f.write(data))
        try:
            _in_folder(os.path.dirname(path), lambda: os.link(tmp, path))
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_dir(os.path.dirname(path))
        return True

    def append(self, path: str, line: bytes) -> bool:
        """Append ``line`` to an existing file of at most :data:`APPEND_MAX` bytes, on a line of
        its own (after a newline, if a torn earlier append left the file without one).

        Creating a file costs more than writing one: a new inode, and, on an ext4 without a
        journal, a scan of every inode freed in the last minutes; replacing a file frees one."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            return False
        try:
            size = os.fstat(fd).st_size
            if size > APPEND_MAX:
                return False
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def read_tagged(self, path: str) -> Tagged | None:
        try:
            with open(path, "rb") as f:
                data = f.read()
                mtime = os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return None
        modified = datetime.fromtimestamp(mtime, UTC)
        return Tagged(data, hashlib.sha256(data).hexdigest(), modified)

    def replace_if(self, path: str, data: bytes, tag: str) -> bool:
        """An object that no longer exists is never recreated."""
        tmp = self._stage(path, lambda f: f.write(data))  # the slow part, outside the lock
        try:
            with _cas_lock(os.path.dirname(path)):
                try:
                    with open(path, "rb") as f:
                        current = f.read()
                except FileNotFoundError:
                    return False
                if hashlib.sha256(current).hexdigest() != tag:
                    return False
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_dir(os.path.dirname(path))
        return True

    def copy(self, src: str, dest: str) -> None:
        def copy_into(f: IO[bytes]) -> None:
            with open(src, "rb") as source:  # one version, even if replaced meanwhile
                shutil.copyfileobj(source, f)

        self._replace(dest, copy_into)

    def sha256(self, path: str) -> str:
        return fs_sha256(self.fs, path)

    def name_pages(self, folder: str) -> Iterator[list[str]]:
        """One directory scan, handed out (and counted as ``LIST`` requests) page by page."""
        try:
            with os.scandir(folder) as entries:
                names = sorted(e.name for e in entries if e.is_file(follow_symlinks=False))
        except FileNotFoundError:
            names = []
        for page in pages_of(names):
            self.count("LIST")
            yield page

    def clean_staging(self, older_than: float) -> int:
        """Safe while other runs write under the same root: a live writer's staging file exists
        for the milliseconds of one write (its mtime moves while it is written), so a file older
        than an hour was left by a killed process; a file that vanishes while it is looked at
        (renamed into place by its writer) is skipped, never an error."""
        removed, cutoff = 0, time.time() - older_than
        try:
            entries = list(os.scandir(os.path.join(self.root, TMP_DIR)))
        except FileNotFoundError:
            return 0
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def _stage(self, dest: str, fill: Callable[[IO[bytes]], object]) -> str:
        """Write a durable staging file for ``dest`` under ``_tmp/``; return its path."""
        tmp_dir = os.path.join(self.root, TMP_DIR)
        tmp = os.path.join(tmp_dir, f"{uuid.uuid4().hex}-{os.path.basename(dest)}")
        try:
            with _in_folder(tmp_dir, lambda: open(tmp, "wb")) as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tmp

    def _replace(self, dest: str, fill: Callable[[IO[bytes]], object]) -> None:
        tmp = self._stage(dest, fill)
        try:
            _in_folder(os.path.dirname(dest), lambda: os.replace(tmp, dest))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(os.path.dirname(dest))


def _in_folder(folder: str, action: Callable[[], T]) -> T:
    """``action()``, which puts a file in ``folder``; again once ``folder`` is made, if it failed
    for want of it. A folder is made once, not asked for on every write (each ``mkdir`` of one
    that exists takes its parent's lock: writer threads queued on the root's)."""
    try:
        return action()
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        return action()


@contextlib.contextmanager
def _cas_lock(folder: str) -> Iterator[None]:
    os.makedirs(folder, exist_ok=True)
    with _CAS_THREADS:
        fd = os.open(os.path.join(folder, CAS_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock


def _fsync_dir(folder: str) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

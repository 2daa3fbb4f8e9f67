"""WebDataset tar shards of a partition range, with a manifest; streamed one image at a time.

Each COMPLETED row becomes one sample: ``KEY.jpg`` (or the stored image's extension),
``KEY.txt`` (the prompt, as img2dataset writes captions) and ``KEY.json`` (its lineage fields,
``partition``, and each attribute as a top-level key too). The key is
``{partition}/{prompt_id}-{seed}``, unique across a range; a dot in it is written ``%2E``, since
WebDataset ends a key at the first dot (the ``.json`` holds the real values).

Only images a service made are exported, and each image once (same backend and
``request_key``), unless ``include_synthetic`` / ``keep_duplicates``; blank images and
near-duplicates whose original is in the export's partitions (:mod:`flux_pipeline.quality`)
are left out unless ``include_flagged``. What is left out is counted, by reason. Every image's
sha256 is checked against its lineage. Shards are closed before they would pass
``max_samples_per_shard`` or ``max_shard_bytes``, published whole, and reproducible (the same
range exports to the same bytes); ``manifest.json`` is written last, then shards of an earlier
export with the same prefix that it does not list are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import IO, Any, Final

from flux_pipeline.dataset.partitions import read_partition_rows
from flux_pipeline.dataset.shard_defaults import (
    DEFAULT_MAX_SAMPLES,
    DEFAULT_MAX_SHARD_BYTES,
    DEFAULT_PREFIX,
    MANIFEST_FILE,
)
from flux_pipeline.protocol import COMPLETED
from flux_pipeline.quality.export_gate import ExportGate
from flux_pipeline.quality.near_duplicates import DEFAULT_NEAR_DUPLICATE_BITS
from flux_pipeline.store.imagefolder import labels
from flux_pipeline.store.layout import TMP_DIR, images_dir
from flux_pipeline.store.lineage import LineageRow
from flux_pipeline.store.provenance import is_service
from flux_pipeline.store.storage import ObjectStore

_PREFIX_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: Upper bound of a member's headers: its 512-byte header and a PAX header for a long name.
_HEADERS: Final = 2 * tarfile.BLOCKSIZE

_Member = tuple[tarfile.TarInfo, bytes]


class ExportError(RuntimeError):
    """A stored image is missing or differs from its lineage."""


@dataclass(frozen=True)
class ShardInfo:
    """One written shard: its file name (relative to the output), samples, bytes, sha256."""

    name: str
    samples: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ShardManifest:
    """What an export wrote; ``to_json`` is the content of ``manifest.json``."""

    source: str
    partitions: tuple[str, ...]
    shards: tuple[ShardInfo, ...]
    samples: int
    bytes: int
    duplicates_skipped: int
    failed_skipped: int
    synthetic_skipped: int
    #: Rows left out by the quality gates, by reason (``blank``, ``near_duplicate``).
    flagged_skipped: dict[str, int]
    include_flagged: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "webdataset",
            "source": self.source,
            "partitions": list(self.partitions),
            "shards": [asdict(s) for s in self.shards],
            "samples": self.samples,
            "bytes": self.bytes,
            "duplicates_skipped": self.duplicates_skipped,
            "failed_skipped": self.failed_skipped,
            "synthetic_skipped": self.synthetic_skipped,
            "flagged_skipped": dict(sorted(self.flagged_skipped.items())),
            "include_flagged": self.include_flagged,
        }


def sample_key(partition: str, prompt_id: str, seed: int) -> str:
    """The WebDataset key of one image: ``{partition}/{prompt_id}-{seed}``, dots escaped."""
    return f"{_escape(partition)}/{_escape(prompt_id)}-{seed}"


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


def export_shards(
    store: ObjectStore,
    partitions: Sequence[str],
    out: ObjectStore,
    *,
    prefix: str = DEFAULT_PREFIX,
    max_samples_per_shard: int = DEFAULT_MAX_SAMPLES,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    keep_duplicates: bool = False,
    include_synthetic: bool = False,
    include_flagged: bool = False,
    near_duplicate_bits: int = DEFAULT_NEAR_DUPLICATE_BITS,
    on_shard: Callable[[ShardInfo], None] | None = None,
) -> ShardManifest:
    """Pack the COMPLETED rows of ``partitions`` (stored in ``store``) into shards in ``out``.

    See the module for the layout. Raises ValueError for bad arguments and ExportError for an
    image that is missing or whose sha256 differs from its lineage row.
    """
    if not _PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(f"prefix {prefix!r}: use letters, digits, '_', '-' and '.'")
    if max_samples_per_shard < 1:
        raise ValueError(f"max_samples_per_shard must be at least 1, not {max_samples_per_shard}")
    if max_shard_bytes < tarfile.RECORDSIZE:
        raise ValueError(f"max_shard_bytes must be at least {tarfile.RECORDSIZE}")
    gate = ExportGate.open(store, partitions, near_duplicate_bits, include_flagged=include_flagged)
    seen: set[tuple[str | None, str]] = set()
    duplicates = failed = synthetic = 0
    shards: list[ShardInfo] = []

    def publish(info: ShardInfo) -> None:
        shards.append(info)
        if on_shard is not None:
            on_shard(info)

    with _ShardWriter(out, prefix, max_samples_per_shard, max_shard_bytes, publish) as writer:
        for partition in partitions:
            for row in read_partition_rows(store, partition):
                made = (row.backend, row.request_key)
                if row.status != COMPLETED:
                    failed += 1
                elif not (include_synthetic or is_service(row.backend)):
                    synthetic += 1
                elif gate is not None and not gate.keeps(row):
                    continue
                elif made in seen and not keep_duplicates:
                    duplicates += 1
                else:
                    seen.add(made)
                    writer.add(list(_sample(store, partition, row)))
    manifest = ShardManifest(
        source=store.uri(""),
        partitions=tuple(partitions),
        shards=tuple(shards),
        samples=sum(s.samples for s in shards),
        bytes=sum(s.bytes for s in shards),
        duplicates_skipped=duplicates,
        failed_skipped=failed,
        synthetic_skipped=synthetic,
        flagged_skipped=dict(gate.left_out) if gate is not None else {},
        include_flagged=include_flagged,
    )
    body = json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n"
    out.write_atomic(MANIFEST_FILE, body.encode())
    _remove_stale_shards(out, prefix, {s.name for s in shards})
    if out.is_local:
        with contextlib.suppress(OSError):  # the staging folder, unless something else uses it
            os.rmdir(os.path.join(out.root, TMP_DIR))
    return manifest


def _escape(text: str) -> str:
    return text.replace(".", "%2E")


def _sample(store: ObjectStore, partition: str, row: LineageRow) -> Iterator[_Member]:
    """The sample's tar members and their bytes, image first."""
    if row.image_uri is None:
        raise ExportError(f"partition {partition}, prompt_id {row.prompt_id!r}: no image_uri")
    file_name = row.image_uri.rsplit("/", 1)[-1]
    relpath = f"{images_dir(partition)}/{file_name}"
    try:
        image = store.read_bytes(relpath)
    except FileNotFoundError:
        raise ExportError(
            f"partition {partition}, prompt_id {row.prompt_id!r}: image {store.uri(relpath)} "
            "is missing; rebuild the partition"
        ) from None
    digest = hashlib.sha256(image).hexdigest()
    if digest != row.image_sha256:
        raise ExportError(
            f"partition {partition}, prompt_id {row.prompt_id!r}: {store.uri(relpath)} has "
            f"sha256 {digest}, the lineage says {row.image_sha256}; rebuild the partition"
        )
    key = sample_key(partition, row.prompt_id, row.seed)
    mtime = int(row.completed_at.timestamp()) if row.completed_at else 0
    extension = file_name.rsplit(".", 1)[-1].lower()
    # The lineage fields, and each attribute top-level too (reserved names never clash).
    metadata = {"partition": partition, **row.to_json(), **labels(row)}
    for suffix, data in (
        (extension, image),
        ("txt", row.prompt.encode()),
        ("json", json.dumps(metadata, ensure_ascii=False, sort_keys=True).encode()),
    ):
        info = tarfile.TarInfo(f"{key}.{suffix}")
        info.size, info.mtime, info.mode = len(data), mtime, 0o644
        yield info, data


def _padded(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _member_bound(info: tarfile.TarInfo) -> int:
    return _HEADERS + _padded(len(info.name.encode()) + 64) + _padded(info.size)


def _closed_size(offset: int) -> int:
    """A tar's size once closed at ``offset``: two zero blocks, then padded to a record."""
    end = offset + 2 * tarfile.BLOCKSIZE
    return -(-end // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


class _HashingFile:
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.file.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


class _ShardWriter:
    """Writes samples into size-bounded shards; each is published whole when it closes."""

    def __init__(
        self,
        out: ObjectStore,
        prefix: str,
        max_samples: int,
        max_bytes: int,
        publish: Callable[[ShardInfo], None],
    ) -> None:
        self.out, self.prefix = out, prefix
        self.max_samples, self.max_bytes = max_samples, max_bytes
        self.publish = publish
        self.staging = os.path.join(out.root, TMP_DIR) if out.is_local else None
        self.index = 0
        self.samples = 0
        self.file: IO[bytes] | None = None
        self.hashing: _HashingFile | None = None
        self.tar: tarfile.TarFile | None = None

    def __enter__(self) -> _ShardWriter:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is None:
            self._close()
        else:
            self._discard()

    def add(self, members: list[_Member]) -> None:
        if self.tar is not None:
            bound = sum(_member_bound(info) for info, _ in members)
            if self.samples >= self.max_samples or (
                _closed_size(self.tar.offset + bound) > self.max_bytes
            ):
                self._close()
        tar = self.tar or self._open()
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
        self.samples += 1

    def _open(self) -> tarfile.TarFile:
        if self.staging is not None:
            os.makedirs(self.staging, exist_ok=True)
        name = f"{uuid.uuid4().hex}-{shard_name(self.prefix, self.index)}"
        self.file = tempfile.NamedTemporaryFile(  # noqa: SIM115  # closed in _close/_discard
            prefix=name, dir=self.staging, delete=False
        )
        self.hashing = _HashingFile(self.file)
        self.tar = tarfile.TarFile(
            fileobj=self.hashing,  # type: ignore[arg-type]
            mode="w",
            format=tarfile.PAX_FORMAT,
        )
        return self.tar

    def _close(self) -> None:
        if self.tar is None or self.file is None or self.hashing is None:
            return
        self.tar.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        name = shard_name(self.prefix, self.index)
        try:
            self._put(self.file.name, name)
        finally:
            if os.path.exists(self.file.name):
                os.unlink(self.file.name)
        info = ShardInfo(name, self.samples, self.hashing.size, self.hashing.sha256.hexdigest())
        self.tar = self.file = self.hashing = None
        self.index += 1
        self.samples = 0
        self.publish(info)

    def _put(self, staged: str, name: str) -> None:
        dest = self.out.path(name)
        if not self.out.is_local:
            self.out.fs.put_file(staged, dest)
            return
        os.replace(staged, dest)
        folder = os.open(os.path.dirname(dest), os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def _discard(self) -> None:
        if self.file is not None:
            self.file.close()
            if os.path.exists(self.file.name):
                os.unlink(self.file.name)
        self.tar = self.file = self.hashing = None


def _remove_stale_shards(out: ObjectStore, prefix: str, keep: set[str]) -> None:
    pattern = re.compile(rf"{re.escape(prefix)}-\d{{6}}\.tar")
    for name in out.list(""):
        if "/" not in name and pattern.fullmatch(name) and name not in keep:
            out.delete(name)

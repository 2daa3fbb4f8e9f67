"""Where things live under the storage root: the one home of those paths.

Every path is relative to the root (POSIX, no leading ``/``); the functions check the names
they are given (partition keys, request keys, owner and run ids) before they build a path. The
layout is drawn in docs/ARCHITECTURE.md ("Storage layout").
"""

from __future__ import annotations

import re
from typing import Final

from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.store.provenance import backend_slug, image_id

IMAGES_DIR: Final = "images"
LINEAGE_DIR: Final = "lineage"
LINEAGE_FILE: Final = "lineage.parquet"
#: Beside each partition's images: the folder is a Hugging Face imagefolder.
METADATA_FILE: Final = "metadata.jsonl"
#: Where the ``prompt_table`` asset stores the validated table.
PROMPT_TABLE_PATH: Final = "prompt_table/prompt_table.parquet"
METRICS_PATH: Final = "metrics/generation_metrics.parquet"
ATTRIBUTE_METRICS_PATH: Final = "metrics/attribute_metrics.parquet"
NEAR_DUPLICATES_PATH: Final = "quality/near_duplicates.parquet"
PHASH_INDEX_DIR: Final = "quality/phash_index"
RECONCILIATION_DIR: Final = "reconciliation"
RECONCILIATION_FILE: Final = "reconciliation.parquet"
LEDGER_DIR: Final = "_ledger"
RECEIPTS_DIR: Final = "_receipts"
CLAIMS_DIR: Final = "_claims"
#: Owners' heartbeats: ``_claims/_owners/{owner}.json``.
OWNERS_DIR: Final = f"{CLAIMS_DIR}/_owners"
RUNS_DIR: Final = "_runs"
#: Local staging of atomic writes; never an object (left out of a listing of the root).
TMP_DIR: Final = "_tmp"
#: Local compare-and-swap serialises on this file, one per folder of swapped objects.
CAS_LOCK: Final = ".cas-lock"

_PARTITION: Final = "partition="
_KEY = re.compile(r"[0-9a-f]{64}")
_OWNER = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
_IMAGE_PARTITION = re.compile(rf"{IMAGES_DIR}/{_PARTITION}([^/]+)/")


def partition_dir(partition: str) -> str:
    """``lineage/partition=KEY``; the key must be a plain folder name."""
    if not partition or "/" in partition or "\\" in partition or partition.startswith("."):
        raise ValueError(f"not a usable partition key: {partition!r}")
    return f"{LINEAGE_DIR}/{_PARTITION}{partition}"


def lineage_path(partition: str) -> str:
    """``lineage/partition=KEY/lineage.parquet``."""
    return f"{partition_dir(partition)}/{LINEAGE_FILE}"


def lineage_partition(relpath: str) -> str | None:
    """The key of a lineage file's path (as :func:`lineage_path` makes it), else None."""
    folder = relpath.removeprefix(f"{LINEAGE_DIR}/")
    suffix = f"/{LINEAGE_FILE}"
    if (
        folder != relpath
        and folder.startswith(_PARTITION)
        and folder.endswith(suffix)
        and folder.count("/") == 1
    ):
        return folder[len(_PARTITION) : -len(suffix)]
    return None


def images_dir(partition: str) -> str:
    """``images/partition=KEY`` (the key checked as in :func:`partition_dir`)."""
    partition_dir(partition)
    return f"{IMAGES_DIR}/{_PARTITION}{partition}"


def image_path(partition: str, request: GenerationRequest, ext: str, backend: str) -> str:
    """Where ``backend``'s image of ``request`` lives in ``partition``:
    ``{prompt_id}-{image_id}.{ext}``, a name no other request key or backend shares."""
    return f"{images_dir(partition)}/{request.key}-{image_id(backend, request.request_key)}.{ext}"


def image_partition(relpath: str) -> str | None:
    """The partition folder key of an image's path, else None."""
    found = _IMAGE_PARTITION.match(relpath)
    return found.group(1) if found else None


def phash_segment_path(partition: str) -> str:
    """``quality/phash_index/partition=KEY.parquet`` (the key checked as in
    :func:`partition_dir`)."""
    partition_dir(partition)
    return f"{PHASH_INDEX_DIR}/{_PARTITION}{partition}.parquet"


def phash_segment_partition(relpath: str) -> str | None:
    """The key of a segment's path (as :func:`phash_segment_path` makes it), else None."""
    name = relpath.removeprefix(f"{PHASH_INDEX_DIR}/{_PARTITION}")
    if name == relpath or not name.endswith(".parquet") or "/" in name:
        return None
    return name.removesuffix(".parquet")


def reconciliation_path(day: str) -> str:
    """``reconciliation/date=DAY/reconciliation.parquet``; ``day`` is ``YYYY-MM-DD``."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        raise ValueError(f"not a day YYYY-MM-DD: {day!r}")
    return f"{RECONCILIATION_DIR}/date={day}/{RECONCILIATION_FILE}"


def receipts_path(partition: str) -> str:
    """``_receipts/partition=KEY.json`` (the key checked as in :func:`partition_dir`)."""
    partition_dir(partition)
    return f"{RECEIPTS_DIR}/{_PARTITION}{partition}.json"


def metadata_path(partition: str) -> str:
    """``images/partition=KEY/metadata.jsonl``."""
    return f"{images_dir(partition)}/{METADATA_FILE}"


def ledger_dir(backend: str) -> str:
    """``_ledger/{backend_slug}``: one backend's ledger folder."""
    return f"{LEDGER_DIR}/{backend_slug(backend)}"


def ledger_path(backend: str, request_key: str) -> str:
    """``_ledger/{backend_slug}/{request_key}.json``; the key must be sha256 hex."""
    return f"{ledger_dir(backend)}/{_checked_key(request_key)}.json"


def claim_path(request_key: str) -> str:
    """``_claims/{request_key}.json``; the key must be sha256 hex."""
    return f"{CLAIMS_DIR}/{_checked_key(request_key)}.json"


def owner_path(owner: str) -> str:
    """``_claims/_owners/{owner}.json``; the owner id must be a plain name."""
    if not _OWNER.fullmatch(owner):
        raise ValueError(f"not a claim owner id (letters, digits, '_', '-', '.'): {owner!r}")
    return f"{OWNERS_DIR}/{owner}.json"


def heartbeat_path(run_id: str) -> str:
    """``_runs/{run_id}.json``."""
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    return f"{RUNS_DIR}/{run_id}.json"


def _checked_key(request_key: str) -> str:
    if not _KEY.fullmatch(request_key):
        raise ValueError(f"not a request key (sha256 hex): {request_key!r}")
    return request_key

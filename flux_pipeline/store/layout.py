"""Where things live under the storage root: the one home of those paths.

::

    images/partition=KEY/{prompt_id}-{image_id}.{ext}   images (image_id: backend + request key)
    images/partition=KEY/metadata.jsonl                 the partition as a HF imagefolder
    lineage/partition=KEY/lineage.parquet               one row per prompt (Hive layout)
    prompt_table/prompt_table.parquet                   the validated prompt table
    metrics/generation_metrics.parquet                  generation_metrics
    _ledger/{backend}/{request_key}.json                resume and cache, per backend
    _claims/{request_key}.json, _claims/_owners/        claims and their owners' heartbeats
    _runs/{run_id}.json                                 run heartbeats
    _tmp/                                               local atomic-write staging
"""

from __future__ import annotations

from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.store.provenance import image_id

IMAGES_DIR = "images"
LINEAGE_DIR = "lineage"


def partition_dir(partition: str) -> str:
    """``lineage/partition=KEY``; the key must be a plain folder name."""
    if not partition or "/" in partition or "\\" in partition or partition.startswith("."):
        raise ValueError(f"not a usable partition key: {partition!r}")
    return f"{LINEAGE_DIR}/partition={partition}"


def images_dir(partition: str) -> str:
    """``images/partition=KEY`` (the key checked as in :func:`partition_dir`)."""
    partition_dir(partition)
    return f"{IMAGES_DIR}/partition={partition}"


def image_path(partition: str, request: GenerationRequest, ext: str, backend: str) -> str:
    """Where ``backend``'s image of ``request`` lives in ``partition``:
    ``{prompt_id}-{image_id}.{ext}``, a name no other request key or backend shares."""
    return f"{images_dir(partition)}/{request.key}-{image_id(backend, request.request_key)}.{ext}"

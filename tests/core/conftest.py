"""Fixtures of the core suite: object stores on a local folder and on the moto S3 server."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from flux_pipeline.store.storage import ObjectStore


@pytest.fixture
def local_store(tmp_path: Path) -> ObjectStore:
    return ObjectStore.from_uri(str(tmp_path / "root"))


@pytest.fixture
def s3_store(s3_env: str) -> ObjectStore:
    """A fresh bucket on the moto server, rooted under a prefix."""
    import s3fs

    bucket = f"flux-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    return ObjectStore.from_uri(f"s3://{bucket}/pipeline")

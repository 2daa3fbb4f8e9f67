"""The same build with the object store on S3 (moto's server, reached through s3fs)."""

from __future__ import annotations

import io
import uuid
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from tests.support.dagster_support import (
    PARTITION,
    Runner,
    checks_by_name,
    failure_message,
    make_resources,
)


@pytest.fixture
def bucket_root(s3_env: str) -> str:
    """A fresh bucket on the moto server; returns ``s3://bucket/prefix``."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_env)
    name = f"flux-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    return f"s3://{name}/builds"


def _built(
    bucket_root: str, emulator: Any, instance: dg.DagsterInstance
) -> tuple[Runner, dg.ExecuteInProcessResult]:
    """The prompt table, then one partition built into ``bucket_root`` with its checks."""
    runner = Runner(make_resources(emulator.url, bucket_root), instance)
    assert runner.prompt_table().success
    result = runner.partition()
    assert result.success, failure_message(result)
    return runner, result


def _lineage(bucket_root: str, s3_env: str) -> tuple[Any, pd.DataFrame]:
    """An s3fs filesystem on the moto server, and the partition's lineage read through it."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_env)
    lineage_uri = f"{bucket_root}/lineage/partition={PARTITION}/lineage.parquet"
    return fs, pd.read_parquet(io.BytesIO(fs.cat_file(lineage_uri)))


def test_a_partition_builds_into_s3_and_passes_its_checks(
    bucket_root: str,
    fast_emulator: Any,
    instance: dg.DagsterInstance,
    prompts_csv: Any,
    s3_env: str,
) -> None:
    runner, result = _built(bucket_root, fast_emulator, instance)
    fs, lineage = _lineage(bucket_root, s3_env)
    assert len(lineage) == 6
    for uri in lineage["image_uri"]:
        assert uri.startswith(f"{bucket_root}/images/partition={PARTITION}/")
        assert fs.exists(uri)
    assert all(evaluation.passed for evaluation in checks_by_name(result).values())

    before = fast_emulator.stats()["requests"]
    assert runner.partition().success
    assert fast_emulator.stats()["requests"] == before


def test_on_s3_the_integrity_check_reads_back_only_what_changed_since_the_build(
    bucket_root: str,
    fast_emulator: Any,
    instance: dg.DagsterInstance,
    prompts_csv: Any,
    s3_env: str,
) -> None:
    """The build keeps the ETag S3 gave each image (``_receipts/``): the check verifies the
    partition from one listing, and reads back (and catches) only the objects whose ETag moved."""
    runner, built = _built(bucket_root, fast_emulator, instance)
    integrity = checks_by_name(built)["images_match_sha256"]
    assert integrity.passed
    assert integrity.metadata["images_verified"].value == 6
    assert integrity.metadata["images_read_back"].value == 0

    fs, lineage = _lineage(bucket_root, s3_env)
    lineage = lineage.set_index("prompt_id")
    fs.rm_file(lineage.loc["fox", "image_uri"])
    tower = lineage.loc["tower", "image_uri"]
    fs.pipe_file(tower, fs.cat_file(tower) + b"\0")  # a new version: a new ETag

    integrity = checks_by_name(runner.checks())["images_match_sha256"]
    assert not integrity.passed
    assert integrity.metadata["missing"].value == "fox"
    assert integrity.metadata["sha256_mismatch"].value == "tower"
    assert integrity.metadata["images_read_back"].value == 2

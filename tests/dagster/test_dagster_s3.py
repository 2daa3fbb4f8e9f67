"""The same build with the object store on S3 (moto's server, reached through s3fs)."""

from __future__ import annotations

import io
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from dagster_support import PARTITION, Runner, checks_by_name, failure_message, make_resources


@pytest.fixture
def bucket_root(s3_env: str) -> str:
    """A fresh bucket on the moto server; returns ``s3://bucket/prefix``."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_env)
    name = f"flux-{id(fs):x}"
    fs.mkdir(name)
    return f"s3://{name}/builds"


def test_a_partition_builds_into_s3_and_passes_its_checks(
    bucket_root: str,
    fast_emulator: Any,
    instance: dg.DagsterInstance,
    prompts_csv: Any,
    s3_env: str,
) -> None:
    import s3fs

    runner = Runner(make_resources(fast_emulator.url, bucket_root), instance)
    assert runner.prompt_table().success

    result = runner.partition()

    assert result.success, failure_message(result)
    fs = s3fs.S3FileSystem(endpoint_url=s3_env)
    lineage_uri = f"{bucket_root}/lineage/partition={PARTITION}/lineage.parquet"
    lineage = pd.read_parquet(io.BytesIO(fs.cat_file(lineage_uri)))
    assert len(lineage) == 6
    for uri in lineage["image_uri"]:
        assert uri.startswith(f"{bucket_root}/images/partition={PARTITION}/")
        assert fs.exists(uri)
    assert all(evaluation.passed for evaluation in checks_by_name(result).values())

    before = fast_emulator.stats()["requests"]
    assert runner.partition().success
    assert fast_emulator.stats()["requests"] == before

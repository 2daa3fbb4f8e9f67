"""What the Dagster UI shows: column descriptions, the backend, request counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from dagster_support import KEY, Runner, failure_message, metadata_of

from flux_pipeline.lineage import LINEAGE_COLUMNS, LINEAGE_DESCRIPTIONS


def test_generated_images_metadata_names_the_backend_and_each_kind_of_request(
    runner: Runner, fast_emulator: Any, storage_root: Path
) -> None:
    assert runner.prompt_table().success

    result = runner.partition()

    assert result.success, failure_message(result)
    meta = metadata_of(result, "generated_images")
    assert meta["backend"] == fast_emulator.url
    assert all(KEY not in str(value) for value in meta.values())
    served = fast_emulator.stats()["requests"]
    assert meta["api_requests"] == served["submit"] + served["status"] + served["result"]
    assert meta["media_downloads"] == served["output"] == 6
    assert meta["http_requests"] == meta["api_requests"] + meta["media_downloads"]
    lineage = pd.read_parquet(storage_root / "lineage")
    assert meta["http_requests"] == lineage["attempts"].sum()  # what generation_metrics sums
    assert meta["retried_requests"] == 0
    assert meta["reported_cost"] > 0
    assert "synthetic" not in meta["contact_sheet"].split("](", 1)[0]  # a configured server
    schema = meta["dagster/column_schema"].columns
    assert [column.name for column in schema] == list(LINEAGE_COLUMNS)
    assert [column.description for column in schema] == [
        LINEAGE_DESCRIPTIONS[name] for name in LINEAGE_COLUMNS
    ]

from __future__ import annotations

import dataclasses

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from flux_pipeline.store.lineage import (
    LINEAGE_COLUMNS,
    LINEAGE_SCHEMA,
    LineageRow,
    each_partition_lineage,
    read_lineage,
    write_partition_lineage,
)
from flux_pipeline.store.storage import ObjectStore
from tests.support.rows import make_row


def test_lineage_reads_as_one_table_with_every_reader(local_store: ObjectStore) -> None:
    write_partition_lineage(
        local_store, "2026-11-20", [make_row("a"), make_row("b", status="FAILED")]
    )
    write_partition_lineage(local_store, "2026-11-21", [make_row("c", cached=True)])
    root = local_store.uri("lineage")

    by_pyarrow = ds.dataset(root, format="parquet", partitioning="hive").to_table().to_pandas()
    by_pandas = pd.read_parquet(root)
    by_duckdb = duckdb.sql(
        f"SELECT * FROM read_parquet('{root}/*/*.parquet', hive_partitioning = true)"
    ).df()
    ours = read_lineage(local_store)
    for frame in (by_pyarrow, by_pandas, by_duckdb, ours):
        assert len(frame) == 3
        assert set(frame.columns) == set(LINEAGE_COLUMNS)
        assert sorted(zip(frame["partition"].astype(str), frame["prompt_id"], strict=True)) == [
            ("2026-11-20", "a"), ("2026-11-20", "b"), ("2026-11-21", "c"),
        ]  # fmt: skip
    assert list(ours.columns) == list(LINEAGE_COLUMNS)
    failed = ours.set_index("prompt_id").loc["b"]
    assert failed["status"] == "FAILED"
    assert failed["error"] == "blocked by the safety filter"
    assert pd.isna(failed["image_uri"])
    assert ours["completed_at"].dt.tz is not None


def test_partitions_read_one_at_a_time_as_the_whole_table_reads_them(
    local_store: ObjectStore,
) -> None:
    assert list(each_partition_lineage(local_store)) == []
    days = ["2026-11-22", "2026-11-20", "2026-11-21"]
    for n, day in enumerate(days):
        write_partition_lineage(local_store, day, [make_row(f"{day}-{i}") for i in range(n + 1)])
    columns = ["partition", "prompt_id", "status"]
    whole = read_lineage(local_store, columns=columns)

    read = list(each_partition_lineage(local_store, columns=columns))

    assert [key for key, _ in read] == sorted(days)
    for key, frame in read:
        assert list(frame.columns) == columns
        assert set(frame["partition"].astype(str)) == {key}  # only its own rows in memory
        mine = whole[whole["partition"].astype(str) == key]
        assert sorted(frame["prompt_id"]) == sorted(mine["prompt_id"])
    assert sum(len(frame) for _, frame in read) == len(whole) == 6


def test_files_carry_the_explicit_schema_without_partition(local_store: ObjectStore) -> None:
    uri = write_partition_lineage(local_store, "2026-11-20", [make_row("a")])
    assert uri == local_store.uri("lineage/partition=2026-11-20/lineage.parquet")
    schema = pq.read_schema(uri)
    assert schema.remove_metadata().equals(LINEAGE_SCHEMA)
    assert "partition" not in schema.names


def test_rewriting_a_partition_replaces_it(local_store: ObjectStore) -> None:
    write_partition_lineage(local_store, "p", [make_row("a"), make_row("b")])
    write_partition_lineage(local_store, "p", [make_row("a", cached=True)])
    frame = read_lineage(local_store)
    assert frame["prompt_id"].tolist() == ["a"]
    assert frame["cached"].tolist() == [True]
    assert local_store.list("lineage") == ["lineage/partition=p/lineage.parquet"]


def test_empty_store_reads_as_an_empty_table_with_the_columns(local_store: ObjectStore) -> None:
    frame = read_lineage(local_store)
    assert frame.empty
    assert list(frame.columns) == list(LINEAGE_COLUMNS)


def test_a_row_of_the_wrong_type_is_refused(local_store: ObjectStore) -> None:
    bad = dataclasses.replace(make_row("a"), seed="seven")  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError)):
        write_partition_lineage(local_store, "p", [bad])
    assert local_store.list("lineage") == []


@pytest.mark.parametrize("bad", ["", "a/b", "..", ".hidden"])
def test_unsafe_partition_keys_are_refused(local_store: ObjectStore, bad: str) -> None:
    with pytest.raises(ValueError, match="partition key"):
        write_partition_lineage(local_store, bad, [make_row("a")])


def test_lineage_on_s3_reads_with_pandas_and_ours(s3_store: ObjectStore) -> None:
    write_partition_lineage(s3_store, "2026-11-20", [make_row("a")])
    write_partition_lineage(s3_store, "2026-11-21", [make_row("b")])
    assert sorted(read_lineage(s3_store)["prompt_id"]) == ["a", "b"]
    frame = pd.read_parquet(s3_store.uri("lineage"))
    assert sorted(frame["partition"].astype(str)) == ["2026-11-20", "2026-11-21"]


def test_json_round_trip() -> None:
    row = make_row("a")
    assert LineageRow.from_json(row.to_json()) == row

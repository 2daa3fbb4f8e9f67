"""``metadata.jsonl`` written by builds, and Hugging Face ``datasets`` loading it (local, S3)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pytest

from flux_pipeline.store.imagefolder import METADATA_FIELDS
from flux_pipeline.store.layout import METADATA_FILE
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.storage import ObjectStore
from tests.support.dataset_builds import DAYS

Builder = Callable[..., ObjectStore]


def completed(store: ObjectStore) -> dict[tuple[str, str], dict[str, Any]]:
    """COMPLETED lineage rows by (partition, prompt_id)."""
    frame = read_lineage(store)
    rows = frame[frame["status"] == "COMPLETED"].to_dict("records")
    return {(r["partition"], r["prompt_id"]): r for r in rows}


def check_loaded(rows: list[dict[str, Any]], store: ObjectStore, days: tuple[str, ...]) -> None:
    """Every COMPLETED image of ``days`` exactly once, with its lineage and its own bytes."""
    expected = {k: v for k, v in completed(store).items() if k[0] in days}
    seen = {}
    for row in rows:
        key = (str(row["partition"])[:10], row["prompt_id"])
        seen[key] = row
        lineage = expected[key]
        for name in ("prompt", "seed", "steps", "aspect_ratio", "width", "height", "request_key"):
            assert row[name] == lineage[name], (key, name)
        image = row["image"]
        with fsspec.open(image["path"], "rb") as f:
            data = image["bytes"] or f.read()
        assert hashlib.sha256(data).hexdigest() == lineage["image_sha256"], key
    assert len(seen) == len(rows) == len(expected)
    assert set(seen) == set(expected)


def load(cache: Path, **kwargs: Any) -> Any:
    import datasets

    loaded = datasets.load_dataset("imagefolder", cache_dir=str(cache), **kwargs)
    assert list(loaded) == ["train"]
    split = loaded["train"]
    assert "label" not in split.column_names
    assert split.column_names == ["image", "partition", *METADATA_FIELDS]
    return split.cast_column("image", datasets.Image(decode=False))


def test_metadata_lists_completed_rows_with_their_files(
    build_days: Builder, local_root: ObjectStore
) -> None:
    store = build_days(local_root)
    frame = read_lineage(store)
    for day in DAYS:
        folder = Path(store.path(f"images/partition={day}"))
        lines = [json.loads(x) for x in (folder / METADATA_FILE).read_text().splitlines()]
        rows = frame[(frame["partition"] == day) & (frame["status"] == "COMPLETED")]
        assert (
            [x["prompt_id"] for x in lines]
            == list(rows["prompt_id"])
            == [
                "fox",
                "whale.v2",
                "tower",
            ]
        )
        for line, row in zip(lines, rows.to_dict("records"), strict=True):
            assert list(line) == ["file_name", "partition", *METADATA_FIELDS]
            # A row without attributes: null in the lineage (NaN in pandas), "{}" in the file.
            assert line == {"file_name": Path(row["image_uri"]).name, "partition": day} | {
                name: "{}" if name == "attributes" and pd.isna(row[name]) else row[name]
                for name in METADATA_FIELDS
            }
            assert (folder / line["file_name"]).is_file()


def test_data_dir_loads_every_partition_and_data_files_choose(
    build_days: Builder, local_root: ObjectStore, hf_offline: Path
) -> None:
    store = build_days(local_root)
    images = store.path("images")
    check_loaded(list(load(hf_offline, data_dir=images)), store, DAYS)
    chosen = load(hf_offline, data_dir=images, data_files=f"partition={DAYS[1]}/*")
    check_loaded(list(chosen), store, DAYS[1:])
    absolute = load(hf_offline, data_files=f"{images}/partition=*/*")
    check_loaded(list(absolute), store, DAYS)


def test_file_names_with_split_words_warn_and_load_with_data_files(
    build_days: Builder,
    local_root: ObjectStore,
    hf_offline: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = "prompt_id,prompt\ntest-card,a television test card\nfox,a red fox in snow\n"
    with caplog.at_level(logging.WARNING, logger="flux_pipeline.store.imagefolder"):
        store = build_days(local_root, table)
    warnings = [r.getMessage() for r in caplog.records if "split word" in r.getMessage()]
    assert len(warnings) == len(DAYS)
    assert "test-card-" in warnings[0]
    assert "data_files='partition=*/*'" in warnings[0]
    loaded = load(hf_offline, data_dir=store.path("images"), data_files="partition=*/*")
    check_loaded(list(loaded), store, DAYS)


def test_s3_root_streams_with_data_files_globs(
    build_days: Builder, s3_bucket: str, hf_offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """datasets refuses every remote URL in offline mode, S3 included: this test turns it off
    and points the hub at a closed loopback port, so a hub request would fail, not download."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", "http://127.0.0.1:9")
    store = build_days(ObjectStore.from_uri(f"s3://{s3_bucket}/pipeline"))
    images = store.uri("images")
    every = datasets.load_dataset(
        "imagefolder",
        data_files=f"{images}/partition=*/*",
        streaming=True,
        cache_dir=str(hf_offline),
    )
    assert list(every) == ["train"]
    decoded = [dict(r) for r in every["train"]]
    assert {r["image"].size for r in decoded} == {(1024, 1024), (1344, 768), (640, 1536)}
    raw = every["train"].cast_column("image", datasets.Image(decode=False))
    check_loaded(list(raw), store, DAYS)
    one = datasets.load_dataset(
        "imagefolder",
        data_files={"train": f"{images}/partition={DAYS[0]}/*"},
        streaming=True,
        cache_dir=str(hf_offline),
    )["train"].cast_column("image", datasets.Image(decode=False))
    check_loaded(list(one), store, DAYS[:1])

"""WebDataset shards: packed from built partitions, read back with the ``webdataset`` package."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import webdataset as wds

from flux_pipeline.dataset.partitions import select_partitions
from flux_pipeline.dataset.shards import ExportError, ShardManifest, export_shards, sample_key
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.storage import ObjectStore
from tests.support.dataset_builds import DAYS

Builder = Callable[..., ObjectStore]


def read_shards(folder: Path, manifest: ShardManifest) -> list[dict[str, Any]]:
    """Every sample of the manifest's shards, in order, as ``webdataset`` yields them."""
    urls = [str(folder / s.name) for s in manifest.shards]
    return list(wds.WebDataset(urls, shardshuffle=False))


def check_manifest(folder: Path, manifest: ShardManifest) -> None:
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk == manifest.to_json()
    for shard in manifest.shards:
        data = (folder / shard.name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (shard.bytes, shard.sha256)
        assert len(list(wds.WebDataset(str(folder / shard.name), shardshuffle=False))) == (
            shard.samples
        )
    assert manifest.samples == sum(s.samples for s in manifest.shards)
    assert sorted(p.name for p in folder.glob("*.tar")) == [s.name for s in manifest.shards]


def check_samples(samples: list[dict[str, Any]], store: ObjectStore) -> set[tuple[str, str]]:
    """Each sample's image has its lineage row's sha256; returns (partition, prompt_id)s."""
    frame = read_lineage(store)
    lineage = {(r["partition"], r["prompt_id"]): r for r in frame.to_dict("records")}
    seen = set()
    for sample in samples:
        meta = json.loads(sample["json"])
        row = lineage[(meta["partition"], meta["prompt_id"])]
        image = sample["jpg"]
        assert hashlib.sha256(image).hexdigest() == row["image_sha256"] == meta["image_sha256"]
        assert sample["__key__"] == sample_key(meta["partition"], row["prompt_id"], row["seed"])
        assert sample["txt"].decode() == row["prompt"]
        assert meta["request_key"] == row["request_key"]
        assert meta["status"] == "COMPLETED"
        seen.add((meta["partition"], meta["prompt_id"]))
    assert len(seen) == len(samples)
    return seen


def test_round_trip_one_image_per_request_key(
    build_days: Builder, local_root: ObjectStore, tmp_path: Path
) -> None:
    store = build_days(local_root)
    out = tmp_path / "shards"
    manifest = export_shards(store, DAYS, ObjectStore.from_uri(str(out)), max_samples_per_shard=2)
    # 3 COMPLETED a day; day two's whale.v2 (pinned seed) is day one's image: 5 samples.
    assert (manifest.samples, manifest.duplicates_skipped, manifest.failed_skipped) == (5, 1, 2)
    assert [s.samples for s in manifest.shards] == [2, 2, 1]
    assert [s.name for s in manifest.shards] == [f"shard-00000{i}.tar" for i in range(3)]
    check_manifest(out, manifest)
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        *(s.name for s in manifest.shards),
    ]
    samples = read_shards(out, manifest)
    assert check_samples(samples, store) == {
        (DAYS[0], "fox"),
        (DAYS[0], "whale.v2"),
        (DAYS[0], "tower"),
        (DAYS[1], "fox"),
        (DAYS[1], "tower"),
    }
    assert samples[1]["__key__"] == f"{DAYS[0]}/whale%2Ev2-11"


def test_keep_duplicates_exports_every_completed_row(
    build_days: Builder, local_root: ObjectStore, tmp_path: Path
) -> None:
    store = build_days(local_root)
    out = tmp_path / "all"
    manifest = export_shards(store, DAYS, ObjectStore.from_uri(str(out)), keep_duplicates=True)
    assert (manifest.samples, manifest.duplicates_skipped, len(manifest.shards)) == (6, 0, 1)
    assert len(check_samples(read_shards(out, manifest), store)) == 6


def test_shards_stay_under_the_byte_limit_and_reexport_is_identical(
    build_days: Builder, local_root: ObjectStore, tmp_path: Path
) -> None:
    store = build_days(local_root)
    out = ObjectStore.from_uri(str(tmp_path / "sized"))
    sizes = read_lineage(store)["image_bytes"].dropna()
    limit = int(sizes.max() * 2.5)
    manifest = export_shards(store, DAYS, out, max_shard_bytes=limit)
    assert len(manifest.shards) > 1
    assert any(s.samples > 1 for s in manifest.shards)
    for shard in manifest.shards:
        assert shard.bytes <= limit or shard.samples == 1
    assert export_shards(store, DAYS, out, max_shard_bytes=limit) == manifest
    fewer = export_shards(store, DAYS[:1], out, max_shard_bytes=limit)
    check_manifest(Path(out.root), fewer)
    assert len(check_samples(read_shards(Path(out.root), fewer), store)) == 3


def test_a_changed_or_missing_image_stops_the_export(
    build_days: Builder, local_root: ObjectStore, tmp_path: Path
) -> None:
    store = build_days(local_root)
    out = ObjectStore.from_uri(str(tmp_path / "bad"))
    image = next(Path(store.path(f"images/partition={DAYS[1]}")).glob("tower-*"))
    image.write_bytes(image.read_bytes() + b"x")
    with pytest.raises(ExportError, match=rf"partition {DAYS[1]}, prompt_id 'tower': .* sha256"):
        export_shards(store, DAYS, out)
    image.unlink()
    with pytest.raises(ExportError, match=r"prompt_id 'tower': image .* is missing"):
        export_shards(store, DAYS, out)
    assert not list(Path(out.root).glob("*.tar"))
    assert not (Path(out.root) / "manifest.json").exists()


def test_s3_to_s3(build_days: Builder, s3_bucket: str, tmp_path: Path) -> None:
    import s3fs

    store = build_days(ObjectStore.from_uri(f"s3://{s3_bucket}/pipeline"))
    out = ObjectStore.from_uri(f"s3://{s3_bucket}/exports/v1")
    manifest = export_shards(store, DAYS, out, max_samples_per_shard=3)
    assert [s.samples for s in manifest.shards] == [3, 2]
    local = tmp_path / "downloaded"
    s3fs.S3FileSystem(skip_instance_cache=True).get(f"{s3_bucket}/exports/v1/", str(local), True)
    check_manifest(local, manifest)
    assert len(check_samples(read_shards(local, manifest), store)) == 5


def test_partition_selection(build_days: Builder, local_root: ObjectStore) -> None:
    store = build_days(local_root)
    assert select_partitions(store) == list(DAYS)
    assert select_partitions(store, [f"{DAYS[0]}...2026-12-31"]) == list(DAYS)
    assert select_partitions(store, [f"{DAYS[0]}..2026-12-31"]) == list(DAYS)  # short form
    assert select_partitions(store, [DAYS[1], DAYS[1]]) == [DAYS[1]]
    with pytest.raises(ValueError, match="'2026-11-22' has no lineage"):
        select_partitions(store, ["2026-11-22"])
    with pytest.raises(ValueError, match="holds no built partition"):
        select_partitions(store, ["2027-01-01..2027-01-31"])
    with pytest.raises(ValueError, match="START <= END"):
        select_partitions(store, [f"{DAYS[1]}...{DAYS[0]}"])
    with pytest.raises(ValueError, match="START <= END"):
        select_partitions(store, [f"{DAYS[0]}....{DAYS[1]}"])

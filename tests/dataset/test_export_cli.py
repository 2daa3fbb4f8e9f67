"""``flux-pipeline export`` as a real subprocess, on local storage and on moto S3."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import webdataset as wds

from flux_pipeline.commands.export import byte_size
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.storage import ObjectStore
from tests.support import forked_cli
from tests.support.dataset_builds import DAYS

COMMAND = Path(sys.executable).with_name("flux-pipeline")
Builder = Callable[..., ObjectStore]


def export(*args: str, root: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLUX_STORAGE_ROOT": root}
    return forked_cli.run([str(COMMAND), "export", *args], env=env, timeout=120)


def test_webdataset_command_packs_a_range(
    build_days: Builder, local_root: ObjectStore, tmp_path: Path
) -> None:
    store = build_days(local_root)
    out = tmp_path / "shards"
    run = export(
        "webdataset",
        str(out),
        "-p",
        f"{DAYS[1]}...2026-12-31",
        "--max-samples-per-shard",
        "2",
        "--prefix",
        "flux",
        root=store.root,
    )
    assert run.returncode == 0, run.stderr
    assert "flux-000000.tar: 2 samples" in run.stdout
    assert "3 samples in 2 shard(s)" in run.stdout
    assert "skipped 0 duplicate(s) and 1 FAILED row(s)" in run.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["partitions"] == [DAYS[1]]
    assert [s["name"] for s in manifest["shards"]] == ["flux-000000.tar", "flux-000001.tar"]
    urls = str(out / "flux-{000000..000001}.tar")
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("jpg", "json"))
    frame = read_lineage(store)
    expected = frame[(frame["partition"] == DAYS[1]) & (frame["status"] == "COMPLETED")]
    assert [meta["prompt_id"] for _, meta in samples] == list(expected["prompt_id"])
    assert [image.size for image, _ in samples] == list(
        zip(expected["width"], expected["height"], strict=True)
    )


def test_imagefolder_command_rewrites_metadata(
    build_days: Builder, local_root: ObjectStore
) -> None:
    store = build_days(local_root)
    files = [Path(store.path(f"images/partition={day}/metadata.jsonl")) for day in DAYS]
    before = [f.read_bytes() for f in files]
    for f in files:
        f.unlink()
    run = export("imagefolder", root=store.root)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(f) for f in files]
    assert [f.read_bytes() for f in files] == before


def test_s3_root_and_output(build_days: Builder, s3_bucket: str) -> None:
    import s3fs

    store = build_days(ObjectStore.from_uri(f"s3://{s3_bucket}/pipeline"))
    run = export("webdataset", f"s3://{s3_bucket}/exports", root=store.uri(""))
    assert run.returncode == 0, run.stderr
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    manifest = json.loads(fs.cat_file(f"{s3_bucket}/exports/manifest.json"))
    (shard,) = manifest["shards"]
    data = fs.cat_file(f"{s3_bucket}/exports/{shard['name']}")
    assert hashlib.sha256(data).hexdigest() == shard["sha256"]
    assert (manifest["samples"], manifest["source"]) == (5, f"s3://{s3_bucket}/pipeline")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("webdataset", "OUT", "-p", "2026-11-22"), "partition '2026-11-22' has no lineage"),
        (("webdataset", "OUT", "--max-samples-per-shard", "0"), "must be at least 1"),
        (("imagefolder", "-p", "2027-01-01...2027-01-02"), "holds no built partition"),
    ],
)
def test_bad_input_is_named(
    build_days: Builder,
    local_root: ObjectStore,
    tmp_path: Path,
    args: tuple[str, ...],
    message: str,
) -> None:
    store = build_days(local_root, days=DAYS[:1])
    args = tuple(str(tmp_path / "out") if a == "OUT" else a for a in args)
    run = export(*args, root=store.root)
    assert run.returncode != 0
    assert run.stderr.startswith("flux-pipeline export: ")
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_byte_sizes() -> None:
    assert [byte_size(s) for s in ("1048576", "500MB", "1GiB", "64 kib")] == [
        2**20,
        500 * 10**6,
        2**30,
        64 * 2**10,
    ]
    with pytest.raises(argparse.ArgumentTypeError, match=r"not a size: '1\.5GB'"):
        byte_size("1.5GB")

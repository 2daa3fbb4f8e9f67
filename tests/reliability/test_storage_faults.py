"""The S3 server goes away in the middle of a build, then comes back on the same port.

The build must fail with a clear storage error (after its retries), record nothing in lineage,
and mark COMPLETED in the ledger only images that really are in storage; once the server is
back, the next build completes the partition.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flux_pipeline.builder import build_partition
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.storage import ObjectStore, StorageError, WriteRetry
from tests.support.reliability_support import (
    PARTITION,
    RestartableS3,
    assert_whole_image,
    engine_config,
    ledger_entries,
    sha256,
    table_requests,
    write_table,
)

PROMPTS = 60
#: Jobs finished by the service before the outage starts.
OUTAGE_AFTER = 15


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[RestartableS3]:
    """A moto S3 server of this test's own, with the AWS variables pointing at it."""
    server = RestartableS3()
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield server
    finally:
        server.stop()


def open_store(bucket: str) -> ObjectStore:
    """The production store (``from_uri``), with botocore's and our retries kept short."""
    store = ObjectStore.from_uri(
        f"s3://{bucket}/pipeline",
        config_kwargs={
            "retries": {"max_attempts": 1, "mode": "standard"},
            "connect_timeout": 2,
            "read_timeout": 10,
        },
    )
    store.retry = WriteRetry(attempts=3, base=0.05, cap=0.2)
    return store


def stop_when(emu: Any, server: RestartableS3, finished: int) -> threading.Thread:
    """Stop ``server`` once the service has finished ``finished`` jobs."""

    def watch() -> None:
        while emu.stats()["jobs"]["completed"] < finished:
            time.sleep(0.02)
        server.stop()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_an_s3_outage_fails_the_build_cleanly_and_the_next_build_completes(
    emulator_factory: Callable[..., Any], s3: RestartableS3, tmp_path: Path
) -> None:
    import s3fs

    bucket = f"flux-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    emu = emulator_factory(workers=4, step_time=0.03)
    requests = table_requests(write_table(tmp_path / "t.csv", PROMPTS))
    config = engine_config(emu.url, max_concurrency=8)
    store = open_store(bucket)

    watcher = stop_when(emu, s3, OUTAGE_AFTER)
    with pytest.raises(StorageError, match=r"could not write s3://.* after 3 attempts"):
        build_partition(requests, partition=PARTITION, store=store, engine_config=config)
    watcher.join()

    s3.start()  # same port, same buckets
    store = open_store(bucket)
    assert store.list("lineage") == []
    entries = ledger_entries(store)
    completed = {k: e for k, e in entries.items() if e["state"] == "COMPLETED"}
    assert completed, "the outage began before any image was stored: nothing was tested"
    for key, entry in completed.items():
        data = store.read_bytes(entry["image_path"])  # COMPLETED => the image is in storage
        assert sha256(data) == entry["lineage"]["image_sha256"], key
        assert_whole_image(data, entry["image_path"])
    before = emu.stats()["jobs"]["by_request_key"]

    report = build_partition(requests, partition=PARTITION, store=store, engine_config=config)

    assert (report.total, report.completed) == (PROMPTS, PROMPTS)
    lineage = read_lineage(store).set_index("prompt_id")
    assert sorted(lineage.index) == sorted(r.key for r in requests)
    assert set(lineage["status"]) == {"COMPLETED"}
    for prompt_id, row in lineage.iterrows():
        data = store.read_bytes(store.relpath(str(row["image_uri"])) or "")
        assert sha256(data) == row["image_sha256"], prompt_id
    # stored before the outage, for this same partition: reused as generated, not cached
    reused = [r for r in requests if r.request_key in completed]
    assert not any(bool(lineage.loc[r.key, "cached"]) for r in reused)
    assert all(
        lineage.loc[r.key, "request_id"] == completed[r.request_key]["request_id"] for r in reused
    )
    after = emu.stats()["jobs"]["by_request_key"]
    assert all(after[k] == before[k] for k in completed)  # stored images are not paid again
    # a job the service accepted and whose id reached the ledger is attached to, not paid again
    recorded = {k for k, e in entries.items() if e["state"] == "SUBMITTED"}
    assert all(after[k] == before[k] for k in recorded)
    # The one way to pay twice across an outage: the service accepted a submit while the ledger
    # could not be written, so its request id was lost with the failed run. Only such keys, and
    # at most one window of in-flight jobs of them.
    unrecorded = set(before) - set(entries)
    twice = {k for k, n in after.items() if n > 1}
    assert twice <= unrecorded
    assert len(twice) <= config.max_concurrency
    assert all(n <= 2 for n in after.values())

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
from pathlib import Path
from typing import Any

import fsspec
import pytest

from flux_pipeline.store.local_backend import APPEND_MAX
from flux_pipeline.store.storage import ObjectStore, StorageError, WriteRetry, last_record

#: Spawned workers: the parent runs threads (the moto server, s3fs's loop) that fork would copy.
MP = multiprocessing.get_context("spawn")
WAIT = 120.0


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    name = "local_store" if request.param == "local" else "s3_store"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def test_write_read_list_copy_delete(store: ObjectStore) -> None:
    uri = store.write_atomic("images/partition=a/x-1.jpg", b"first")
    store.write_atomic("images/partition=a/x-1.jpg", b"second")
    store.write_atomic("images/partition=b/y-2.png", b"other")

    assert store.read_bytes("images/partition=a/x-1.jpg") == b"second"
    with fsspec.open(uri, "rb") as f:
        assert f.read() == b"second"
    assert store.exists("images/partition=a/x-1.jpg")
    assert store.list("images") == ["images/partition=a/x-1.jpg", "images/partition=b/y-2.png"]
    assert store.list("images/partition=a/") == ["images/partition=a/x-1.jpg"]
    assert store.list("nothing-here") == []

    store.copy("images/partition=a/x-1.jpg", "images/partition=c/x-1.jpg")
    assert store.read_bytes("images/partition=c/x-1.jpg") == b"second"
    assert store.size("images/partition=c/x-1.jpg") == 6

    assert store.read_many(["images/partition=b/y-2.png", "images/missing.jpg"]) == {
        "images/partition=b/y-2.png": b"other"
    }
    store.delete("images/partition=a/x-1.jpg")
    store.delete("images/partition=a/x-1.jpg")
    assert not store.exists("images/partition=a/x-1.jpg")
    assert store.relpath(store.uri("lineage/p/l.parquet")) == "lineage/p/l.parquet"
    assert store.relpath("s3://elsewhere/x") is None


def test_local_root_is_absolute_and_writes_leave_no_temporary_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = ObjectStore.from_uri()
    assert store.uri("images/a.jpg") == str(tmp_path / "data" / "images" / "a.jpg")
    store.write_atomic("images/a.jpg", b"x" * 1000)
    store.copy("images/a.jpg", "images/b.jpg")
    assert os.listdir(tmp_path / "data" / "_tmp") == []
    assert sorted(os.listdir(tmp_path / "data" / "images")) == ["a.jpg", "b.jpg"]


def test_read_many_raises_anything_but_missing(local_store: ObjectStore) -> None:
    local_store.write_atomic("_ledger/a/b.json", b"{}")
    with pytest.raises(IsADirectoryError):  # a folder where an object belongs: not "missing"
        local_store.read_many(["_ledger/a", "_ledger/a/b.json"])


def test_clean_tmp_removes_only_old_staging_files(local_store: ObjectStore) -> None:
    tmp = Path(local_store.root) / "_tmp"
    tmp.mkdir()
    (tmp / "old-x.jpg").write_bytes(b"torn")
    os.utime(tmp / "old-x.jpg", (0, 0))
    (tmp / "new-y.jpg").write_bytes(b"being written")
    assert local_store.clean_tmp(older_than=60) == 1
    assert os.listdir(tmp) == ["new-y.jpg"]


def write_many_worker(root: str, name: str, count: int, out: Any) -> None:
    """Write ``count`` objects with no retry, so a staging file removed under it would fail."""
    store = ObjectStore.from_uri(root)
    store.retry = WriteRetry(attempts=1)
    failures = []
    for i in range(count):
        try:
            store.write_atomic(f"images/partition={name}/{i}.jpg", f"{name}-{i}".encode())
        except Exception as exc:
            failures.append(repr(exc))
    out.put((name, failures))


def test_clean_tmp_under_concurrent_writers_never_fails_nor_removes_a_live_file(
    local_store: ObjectStore,
) -> None:
    tmp = Path(local_store.root) / "_tmp"
    tmp.mkdir()
    (tmp / "left-by-a-killed-run.jpg").write_bytes(b"torn")
    os.utime(tmp / "left-by-a-killed-run.jpg", (0, 0))
    count, out = 400, MP.Queue()
    writers = [
        MP.Process(target=write_many_worker, args=(local_store.root, name, count, out))
        for name in ("a", "b")
    ]
    for writer in writers:
        writer.start()
    removed, results = 0, {}
    # A worker lives on until its result is read from the queue: read while cleaning.
    while len(results) < len(writers) and (any(w.is_alive() for w in writers) or not out.empty()):
        removed += local_store.clean_tmp()
        with contextlib.suppress(queue.Empty):
            name, failures = out.get(timeout=0.001)
            results[name] = failures
    for writer in writers:
        writer.join(WAIT)
    assert results == {"a": [], "b": []}
    assert removed == 1
    assert os.listdir(tmp) == []
    for name in ("a", "b"):
        assert local_store.read_bytes(f"images/partition={name}/{count - 1}.jpg") == (
            f"{name}-{count - 1}".encode()
        )
        assert len(local_store.list(f"images/partition={name}")) == count


def test_listing_the_root_leaves_out_staging_files(local_store: ObjectStore) -> None:
    local_store.write_atomic("images/a.jpg", b"x")
    (Path(local_store.root) / "_tmp" / "being-written.jpg").write_bytes(b"half")
    assert local_store.list() == ["images/a.jpg"]
    assert local_store.list("_tmp") == ["_tmp/being-written.jpg"]


def test_create_exclusive_creates_once(store: ObjectStore) -> None:
    assert store.create_exclusive("_claims/k.json", b"first")
    assert not store.create_exclusive("_claims/k.json", b"second")
    assert store.read_bytes("_claims/k.json") == b"first"
    assert store.list("_claims") == ["_claims/k.json"]
    assert store.list("_tmp") == []


def test_replace_if_swaps_only_the_version_that_was_read(store: ObjectStore) -> None:
    assert store.read_tagged("_claims/k.json") is None
    assert not store.replace_if("_claims/k.json", b"x", "any-tag")
    assert not store.exists("_claims/k.json")  # never recreated

    store.create_exclusive("_claims/k.json", b"one")
    first = store.read_tagged("_claims/k.json")
    assert first is not None
    assert first.data == b"one"
    assert store.replace_if("_claims/k.json", b"two", first.tag)
    second = store.read_tagged("_claims/k.json")
    assert second is not None
    assert second.data == b"two"
    assert second.tag != first.tag
    assert not store.replace_if("_claims/k.json", b"three", first.tag)  # stale tag
    assert store.read_bytes("_claims/k.json") == b"two"


@pytest.mark.parametrize(
    ("data", "record"),
    [
        (b"whole", b"whole"),  # written whole, before records were appended
        (b"one\n", b"one"),
        (b"one\ntwo\n", b"two"),
        (b"one\ntw", b"one"),  # an append torn by a crash
        (b"one\n\x00\x00\x00", b"one"),  # torn, the file grown but its data never written
        (b"one\n\x00\x00\ntwo\n", b"two"),  # the next append after a torn one
        (b"one\n\n", b"one"),
    ],
)
def test_last_record_is_the_last_whole_line(data: bytes, record: bytes) -> None:
    assert last_record(data) == record


def test_write_record_keeps_the_newest_record(store: ObjectStore) -> None:
    store.write_record("_ledger/b/k.json", b'{"state": "SUBMITTED"}')
    store.write_record("_ledger/b/k.json", b'{"state": "COMPLETED"}')
    assert last_record(store.read_bytes("_ledger/b/k.json")) == b'{"state": "COMPLETED"}'
    assert store.read_many(["_ledger/b/k.json"]).keys() == {"_ledger/b/k.json"}
    assert store.list("_ledger") == ["_ledger/b/k.json"]
    assert store.requests.snapshot().get("PUT") == 2
    with pytest.raises(ValueError, match="one line"):
        store.write_record("_ledger/b/k.json", b"two\nlines")


def test_a_local_record_is_appended_in_place(local_store: ObjectStore) -> None:
    path = Path(local_store.path("_ledger/b/k.json"))
    local_store.write_record("_ledger/b/k.json", b"one")
    inode = path.stat().st_ino
    local_store.write_record("_ledger/b/k.json", b"two")
    assert path.stat().st_ino == inode  # no new file: the same one, grown
    assert path.read_bytes() == b"one\ntwo\n"
    assert local_store.list("_tmp") == []


def test_a_torn_local_append_reads_as_the_record_before_it_and_the_next_one_heals_it(
    local_store: ObjectStore,
) -> None:
    path = Path(local_store.path("_ledger/b/k.json"))
    local_store.write_record("_ledger/b/k.json", b"one")
    with path.open("ab") as f:
        f.write(b'{"sta')  # a process killed in mid-append
    assert last_record(local_store.read_bytes("_ledger/b/k.json")) == b"one"
    local_store.write_record("_ledger/b/k.json", b"two")
    assert path.read_bytes() == b'one\n{"sta\ntwo\n'
    assert last_record(local_store.read_bytes("_ledger/b/k.json")) == b"two"


def test_a_local_record_file_grown_past_its_limit_is_written_whole(
    local_store: ObjectStore,
) -> None:
    path = Path(local_store.path("_ledger/b/k.json"))
    local_store.write_record("_ledger/b/k.json", b"x" * (APPEND_MAX - 1))
    local_store.write_record("_ledger/b/k.json", b"two")  # appended: the file was at the limit
    assert path.read_bytes() == b"x" * (APPEND_MAX - 1) + b"\ntwo\n"
    local_store.write_record("_ledger/b/k.json", b"three")
    assert path.read_bytes() == b"three\n"


def test_copying_a_missing_source_raises_file_not_found(store: ObjectStore) -> None:
    store.retry = WriteRetry(attempts=50, base=60, cap=60)  # a retry would hang the test
    with pytest.raises(FileNotFoundError):
        store.copy("images/gone.jpg", "images/partition=a/gone.jpg")
    assert not store.exists("images/partition=a/gone.jpg")


def test_s3_uri_is_a_full_s3_uri(s3_store: ObjectStore) -> None:
    uri = s3_store.write_atomic("lineage/partition=k/lineage.parquet", b"pq")
    assert uri.startswith("s3://flux-")
    assert uri.endswith("/pipeline/lineage/partition=k/lineage.parquet")
    assert s3_store.relpath(uri) == "lineage/partition=k/lineage.parquet"


@pytest.mark.parametrize("bad", ["", "/abs", "../up", "a/../../b", "a//b", "./a"])
def test_unsafe_paths_are_refused(local_store: ObjectStore, bad: str) -> None:
    with pytest.raises(ValueError, match="not a safe relative storage path"):
        local_store.write_atomic(bad, b"x")


def test_a_write_that_keeps_failing_raises_storage_error_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    store = ObjectStore.from_uri(str(root))
    store.retry = WriteRetry(attempts=2, base=0.001, cap=0.001)
    (root / "images").write_bytes(b"a file where a folder must go")
    with pytest.raises(StorageError, match=r"could not write .*images/partition=a/x.jpg after 2"):
        store.write_atomic("images/partition=a/x.jpg", b"data")
    assert os.listdir(root / "_tmp") == []


def test_an_unreachable_s3_endpoint_raises_storage_error(
    s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    store = ObjectStore.from_uri(
        "s3://nowhere/p", config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 1}
    )
    store.retry = WriteRetry(attempts=1)
    with pytest.raises(StorageError, match=r"s3://nowhere/p/images/x\.jpg"):
        store.write_atomic("images/x.jpg", b"data")

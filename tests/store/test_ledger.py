from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flux_pipeline.store.backend import PAGE_NAMES
from flux_pipeline.store.ledger import LIST_FROM, SPARED_PER_PAGE, Ledger
from flux_pipeline.store.storage import ObjectStore, last_record
from tests.support.rows import BACKEND, make_row


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


def test_submitted_then_finished(store: ObjectStore) -> None:
    ledger = Ledger(store, BACKEND)
    row = make_row("a")
    key = row.request_key
    assert ledger.get(key) is None
    when = datetime(2026, 11, 20, 1, 2, 3, tzinfo=UTC)
    ledger.record_submitted(key, "req-1", when)

    entry = ledger.get(key)
    assert entry is not None
    assert (entry.state, entry.request_id, entry.submitted_at) == ("SUBMITTED", "req-1", when)
    assert ledger.get_many([key, "0" * 64]) == {key: entry}
    assert json.loads(store.read_bytes(f"{ledger.folder}/{key}.json"))["request_id"] == "req-1"

    store.write_atomic("images/partition=p/a-7.jpg", b"jpeg")
    row = replace(row, image_uri=store.uri("images/partition=p/a-7.jpg"))
    ledger.record_finished(key, row)
    entry = ledger.get(key)
    assert entry is not None
    assert entry.state == "COMPLETED"
    assert entry.lineage == row
    assert entry.image_path == "images/partition=p/a-7.jpg"


def test_a_local_entry_keeps_one_file_and_a_torn_state_reads_as_the_one_before(
    local_store: ObjectStore,
) -> None:
    ledger = Ledger(local_store, BACKEND)
    row = make_row("a", status="FAILED")
    key = row.request_key
    ledger.record_submitted(key, "req-1")
    entry_file = Path(local_store.path(f"{ledger.folder}/{key}.json"))
    inode = entry_file.stat().st_ino
    with entry_file.open("ab") as f:
        f.write(b'{"request_key": "')  # a run killed while it wrote the next state
    assert ledger.get(key).state == "SUBMITTED"  # type: ignore[union-attr]

    ledger.record_finished(key, row)
    assert entry_file.stat().st_ino == inode  # the state changed without a new file
    entry = ledger.get(key)
    assert entry is not None
    assert (entry.state, entry.request_id, entry.lineage) == ("FAILED", row.request_id, row)


def test_failed_entries_and_the_hook_signature(local_store: ObjectStore) -> None:
    ledger = Ledger(local_store, BACKEND)
    failed = make_row("b", status="FAILED")
    ledger.record_submitted(failed.request_key, "req-b")  # as the engine's hook calls it
    assert ledger.get(failed.request_key).submitted_at is not None  # type: ignore[union-attr]
    ledger.record_finished(failed.request_key, failed)
    entry = ledger.get(failed.request_key)
    assert entry is not None
    assert entry.state == "FAILED"
    assert entry.image_path is None
    assert entry.lineage is not None
    assert entry.lineage.error == "blocked by the safety filter"


def test_bad_input_is_refused(local_store: ObjectStore) -> None:
    ledger = Ledger(local_store, BACKEND)
    with pytest.raises(ValueError, match="not a request key"):
        ledger.record_submitted("../../etc/passwd", "x")
    with pytest.raises(ValueError, match="stored under this root"):
        ledger.record_finished(make_row("a").request_key, make_row("a"))
    with pytest.raises(ValueError, match="not a finished status"):
        ledger.record_finished(make_row("a").request_key, replace(make_row("a"), status="QUEUED"))
    with pytest.raises(ValueError, match=r"is not 'https://api\.example\.com''s to keep"):
        ledger.record_finished(make_row("a").request_key, make_row("a", backend="elsewhere"))


def test_each_backend_reads_only_its_own_entries(local_store: ObjectStore) -> None:
    """A job the emulator ran is never attached to nor reused by a service, nor the reverse;
    an entry written before backends were recorded belongs to none of them."""
    service, emulator = Ledger(local_store, BACKEND), Ledger(local_store, "embedded-emulator")
    row = make_row("a", backend="embedded-emulator")
    key = row.request_key
    emulator.record_submitted(key, "req-synthetic")
    assert service.get(key) is None
    local_store.write_atomic("images/partition=p/a.jpg", b"jpeg")
    emulator.record_finished(
        key, replace(row, image_uri=local_store.uri("images/partition=p/a.jpg"))
    )
    assert service.get(key) is None
    assert emulator.get(key).state == "COMPLETED"  # type: ignore[union-attr]
    stored = last_record(local_store.read_bytes(f"{emulator.folder}/{key}.json"))
    assert json.loads(stored)["backend"] == "embedded-emulator"

    legacy = make_row("b")
    local_store.write_atomic(
        f"_ledger/{legacy.request_key}.json",
        json.dumps(
            {"request_key": legacy.request_key, "state": "SUBMITTED", "request_id": "r"}
        ).encode(),
    )
    assert service.get(legacy.request_key) is None
    assert emulator.get(legacy.request_key) is None


def _keys(n: int, tag: str) -> list[str]:
    return [hashlib.sha256(f"{tag}-{i}".encode()).hexdigest() for i in range(n)]


def _put_entries(store: ObjectStore, ledger: Ledger, keys: list[str]) -> None:
    """Entries written in one batch (as many runs would have left them), not one by one."""
    body = {"state": "SUBMITTED", "request_id": "r", "submitted_at": None}
    files = {f"{ledger.folder}/{k}.json": json.dumps({"request_key": k, **body}) for k in keys}
    if store.is_local:
        for path, text in files.items():
            target = Path(store.path(path))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    else:
        store.fs.pipe({store.path(p): t.encode() for p, t in files.items()})


def test_a_plan_reads_only_the_entries_a_listing_names(store: ObjectStore) -> None:
    """Many keys: one LIST settles the missing ones, and only the existing ones are read."""
    ledger = Ledger(store, BACKEND)
    present, missing = _keys(40, "present"), _keys(200, "missing")
    _put_entries(store, ledger, present)

    before = store.requests.snapshot()
    found = ledger.get_many(present + missing)
    after = store.requests.snapshot()

    assert sorted(found) == sorted(present)
    assert after.get("LIST", 0) - before.get("LIST", 0) == 1
    assert after.get("GET", 0) - before.get("GET", 0) == len(present)
    assert ledger.get_many(missing) == {}  # an empty listing settles every key too


def test_a_listing_stops_once_it_spares_less_than_it_costs(store: ObjectStore) -> None:
    """A folder much larger than the keys asked for is listed only while each page spares
    SPARED_PER_PAGE reads; the keys it did not reach are read one by one. Either way the
    answer is exactly the entries that exist (pages past the first are asked for by token)."""
    ledger = Ledger(store, BACKEND)
    stored = _keys(2 * PAGE_NAMES + 500, "stored")
    _put_entries(store, ledger, stored)
    asked_present = stored[::100]  # 25 of them
    # Past the first page (which ends near "66..."): that page spares nothing, so it stops.
    few_missing = ["ff" + k[2:] for k in _keys(LIST_FROM, "few")]
    many_missing = _keys(50 * SPARED_PER_PAGE, "many")  # ~200 per page: it goes on

    before = store.requests.snapshot()
    assert sorted(ledger.get_many(asked_present + few_missing)) == sorted(asked_present)
    middle = store.requests.snapshot()
    assert sorted(ledger.get_many(asked_present + many_missing)) == sorted(asked_present)
    after = store.requests.snapshot()

    def spent(a: dict[str, int], b: dict[str, int], verb: str) -> int:
        return b.get(verb, 0) - a.get(verb, 0)

    assert spent(before, middle, "LIST") == 1
    assert spent(before, middle, "GET") == len(asked_present) + len(few_missing)
    assert spent(middle, after, "LIST") == 3  # the whole folder: three pages
    assert spent(middle, after, "GET") == len(asked_present)

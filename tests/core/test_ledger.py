from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from flux_pipeline.ledger import Ledger
from flux_pipeline.storage import ObjectStore

from .rows import make_row


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


def test_submitted_then_finished(store: ObjectStore) -> None:
    ledger = Ledger(store)
    row = make_row("a")
    key = row.request_key
    assert ledger.get(key) is None
    when = datetime(2026, 11, 20, 1, 2, 3, tzinfo=UTC)
    ledger.record_submitted(key, "req-1", when)

    entry = ledger.get(key)
    assert entry is not None
    assert (entry.state, entry.request_id, entry.submitted_at) == ("SUBMITTED", "req-1", when)
    assert ledger.get_many([key, "0" * 64]) == {key: entry}
    assert json.loads(store.read_bytes(f"_ledger/{key}.json"))["request_id"] == "req-1"

    store.write_atomic("images/partition=p/a-7.jpg", b"jpeg")
    row = replace(row, image_uri=store.uri("images/partition=p/a-7.jpg"))
    ledger.record_finished(key, row)
    entry = ledger.get(key)
    assert entry is not None
    assert entry.state == "COMPLETED"
    assert entry.lineage == row
    assert entry.image_path == "images/partition=p/a-7.jpg"


def test_failed_entries_and_the_hook_signature(local_store: ObjectStore) -> None:
    ledger = Ledger(local_store)
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
    ledger = Ledger(local_store)
    with pytest.raises(ValueError, match="not a request key"):
        ledger.record_submitted("../../etc/passwd", "x")
    with pytest.raises(ValueError, match="stored under this root"):
        ledger.record_finished(make_row("a").request_key, make_row("a"))
    with pytest.raises(ValueError, match="not a finished status"):
        ledger.record_finished(make_row("a").request_key, replace(make_row("a"), status="QUEUED"))

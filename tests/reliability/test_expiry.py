"""A ledger entry whose request id the service has forgotten is submitted once more, not failed."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from flux_pipeline.builder import build_partition
from flux_pipeline.protocol import MODEL
from flux_pipeline.store.ledger import Ledger
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.provenance import service_backend
from flux_pipeline.store.storage import ObjectStore
from tests.support.loopback import TEST_KEY
from tests.support.reliability_support import PARTITION, engine_config, table_requests, write_table

RETENTION = 2.0


def test_an_expired_submitted_entry_is_submitted_once_more_and_completes(
    emulator_factory: Callable[..., Any], tmp_path: Path
) -> None:
    # the account's record forgets it before the results do: nothing to recover from
    emu = emulator_factory(
        workers=4, step_time=0.01, retention=RETENTION, history_retention=RETENTION / 2
    )
    stale, fresh = table_requests(write_table(tmp_path / "t.csv", 2))
    store = ObjectStore.from_uri(str(tmp_path / "root"))

    # an earlier run got a real request id for `stale`, recorded it, then died
    api = httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}, trust_env=False)
    answer = api.post(f"/v2/{MODEL}", json=stale.payload())
    old_id = answer.json()["request_id"]
    submitted_at = datetime.now(UTC) - timedelta(seconds=RETENTION)
    Ledger(store, service_backend(emu.url)).record_submitted(
        stale.request_key, old_id, submitted_at
    )
    while api.get(f"/v2/requests/{old_id}/status").status_code != 404:
        time.sleep(0.2)  # wait for the service to forget it (retention counts from submission)

    report = build_partition(
        [stale, fresh], partition=PARTITION, store=store, engine_config=engine_config(emu.url)
    )

    by_key = emu.stats()["jobs"]["by_request_key"]
    assert by_key == {stale.request_key: 2, fresh.request_key: 1}  # the expired one + one new
    assert (report.engine.attached, report.engine.expired, report.engine.submitted) == (1, 1, 2)
    lineage = read_lineage(store).set_index("prompt_id")
    assert list(lineage["status"]) == ["COMPLETED", "COMPLETED"]
    assert lineage.loc[stale.key, "request_id"] not in (None, old_id)
    entry = Ledger(store, service_backend(emu.url)).get(stale.request_key)
    assert entry is not None
    assert entry.state == "COMPLETED"
    assert entry.request_id == lineage.loc[stale.key, "request_id"]

"""The bill reconciled on a seeded account: a run that died with two jobs in flight, a second
tool submitting a key we store, a failure, and images of another backend; exact counts and USD
per state, then ``--recover`` stores every paid image of a wanted key without a new submit."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from flux_pipeline.builder import build_partition
from flux_pipeline.builder.cost import plan_cost
from flux_pipeline.commands.cli import main
from flux_pipeline.emulator.settings import DEFAULT_PRICE
from flux_pipeline.prompts import load_prompt_table, partition_requests
from flux_pipeline.protocol import MODEL
from flux_pipeline.store.layout import image_path, reconciliation_path
from flux_pipeline.store.ledger import Ledger
from flux_pipeline.store.provenance import service_backend
from flux_pipeline.store.storage import ObjectStore
from tests.support.dagster_support import key_from_env
from tests.support.loopback import TEST_KEY, fast_config

PARTITION = "2026-11-20"
OTHER_PARTITION = "2026-11-21"


def _usd(images: int) -> float:
    return round(images * DEFAULT_PRICE, 6)


def _wait_done(api: httpx.Client, request_id: str) -> None:
    while api.get(f"/v2/requests/{request_id}/status").json().get("status") not in (
        "COMPLETED",
        "FAILED",
    ):
        pass


@pytest.fixture
def seeded(emulator_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    emu = emulator_factory(workers=8, step_time=0.01)
    other = emulator_factory(workers=4, step_time=0.01)  # another backend
    table_path = tmp_path / "prompts.csv"
    prompts = [f"a lighthouse on cliff {i}" for i in range(5)] + ["an nsfw lighthouse"]
    pd.DataFrame({"prompt_id": [f"p{i}" for i in range(6)], "prompt": prompts, "steps": 1}).to_csv(
        table_path, index=False
    )
    requests = partition_requests(load_prompt_table(str(table_path)), PARTITION)
    store = ObjectStore.from_uri(str(tmp_path / "data"))
    backend = service_backend(emu.url)
    ledger = Ledger(store, backend)
    api = httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}, trust_env=False)

    # a run that died with p3 and p4 in flight (their ids in the ledger, no image)
    crashed = {}
    for request in requests[3:5]:
        request_id = api.post(f"/v2/{MODEL}", json=request.payload()).json()["request_id"]
        ledger.record_submitted(request.request_key, request_id, partition=PARTITION)
        crashed[request.request_key] = request_id
    # a build that stored p0..p2 and failed p5 (the safety filter)
    build_partition(
        [*requests[:3], requests[5]],
        partition=PARTITION,
        store=store,
        engine_config=fast_config(emu.url),
    )
    # a second tool on the same account submitting p0's request again
    second_tool = api.post(f"/v2/{MODEL}", json=requests[0].payload()).json()["request_id"]
    for request_id in [*crashed.values(), second_tool]:
        _wait_done(api, request_id)
    # two images made by another backend today
    build_partition(
        partition_requests(load_prompt_table(str(table_path)), OTHER_PARTITION)[:2],
        partition=OTHER_PARTITION,
        store=store,
        engine_config=fast_config(other.url),
    )
    monkeypatch.setenv("SEGMIND_API_KEY", TEST_KEY)
    monkeypatch.setenv("SEGMIND_BASE_URL", emu.url)
    monkeypatch.setenv("FLUX_STORAGE_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("FLUX_PROMPTS", str(table_path))
    return emu, store, requests, crashed, second_tool


def _reconcile(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    today = datetime.now(UTC).date().isoformat()
    capsys.readouterr()
    assert main(["reconcile", "--from", today, "--to", today, "--json", *extra]) == 0
    summary: dict[str, Any] = json.loads(capsys.readouterr().out)
    return summary


def test_reconcile_counts_and_prices_every_state_then_recovers_the_paid_images(
    seeded: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    emu, store, requests, crashed, second_tool = seeded
    submits_before = emu.stats()["jobs"]["by_request_key"]

    summary = _reconcile(capsys)

    assert summary["states"] == {
        "stored": {"images": 3, "usd": _usd(3)},
        "paid_not_stored": {"images": 3, "usd": _usd(3)},  # 2 in flight at the crash + tool
        "stored_not_billed": {"images": 2, "usd": 0.0},  # another backend's
        "failed": {"images": 1, "usd": _usd(1)},
    }
    assert summary["billed_usd"] == _usd(7)
    assert summary["unknown_requests"] == [second_tool]
    today = datetime.now(UTC).date().isoformat()
    day = pd.read_parquet(store.path(reconciliation_path(today))).set_index("request_id")
    assert len(day) == 9
    assert day.loc[second_tool, "request_key"] == requests[0].request_key
    assert not day.loc[second_tool, "known"]
    for key, request_id in crashed.items():
        assert day.loc[request_id, "state"] == "paid_not_stored"
        assert day.loc[request_id, "partition"] == PARTITION
        assert day.loc[request_id, "request_key"] == key
    failed = day[day["state"] == "failed"].iloc[0]
    assert "NSFW" in failed["error"]
    lineage_before = store.read_bytes(f"lineage/partition={PARTITION}/lineage.parquet")

    recovered = _reconcile(capsys, "--recover")

    assert sorted(recovered["recovered"]) == sorted(crashed.values())
    assert recovered["states"]["stored"] == {"images": 5, "usd": _usd(5)}
    assert recovered["states"]["paid_not_stored"] == {"images": 1, "usd": _usd(1)}  # the tool's
    backend = service_backend(emu.url)
    for request in requests[3:5]:
        assert store.exists(image_path(PARTITION, request, "jpg", backend))
        entry = Ledger(store, backend).get(request.request_key)
        assert entry is not None
        assert entry.state == "COMPLETED"
        assert entry.request_id == crashed[request.request_key]
        assert entry.lineage is not None
        assert entry.lineage.recovered_from == "history"
    assert emu.stats()["jobs"]["by_request_key"] == submits_before  # nothing paid again
    assert store.read_bytes(f"lineage/partition={PARTITION}/lineage.parquet") == lineage_before
    # the plan prices new images at what the record billed
    plan = plan_cost(store, {PARTITION: requests}, backend=backend)
    assert (plan.unit.basis, plan.unit.value) == ("billed", pytest.approx(DEFAULT_PRICE))


def test_reconcile_refuses_a_window_that_ends_before_it_starts(
    seeded: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit, match="--from 2026-12-02 is after --to 2026-12-01"):
        main(["reconcile", "--from", "2026-12-02", "--to", "2026-12-01"])


def test_the_asset_reconciles_a_day_and_generation_metrics_gains_the_billed_cost(
    seeded: Any, tmp_path: Path
) -> None:
    import dagster as dg

    from flux_pipeline.assets import account_reconciliation, generation_metrics
    from flux_pipeline.resources import ObjectStoreResource, SegmindResource

    emu, store, _, _, _ = seeded
    resources = {
        "segmind": SegmindResource(api_key=key_from_env(TEST_KEY), base_url=emu.url),
        "storage": ObjectStoreResource(root=str(tmp_path / "data")),
    }
    today = datetime.now(UTC).date().isoformat()
    with dg.DagsterInstance.ephemeral() as instance:
        reconciled = dg.materialize(
            [account_reconciliation], partition_key=today, resources=resources, instance=instance
        )
        metrics = dg.materialize([generation_metrics], resources=resources, instance=instance)

    assert reconciled.success
    (event,) = reconciled.get_asset_materialization_events()
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert (meta["stored_images"], meta["paid_not_stored_images"]) == (3, 3)
    assert (meta["failed_images"], meta["stored_not_billed_images"]) == (1, 2)
    assert meta["billed_usd"] == _usd(7)
    assert meta["unknown_requests"] == 1
    assert meta["provisional"] is True  # today: the record lags
    assert metrics.success
    frame = pd.read_parquet(store.path("metrics/generation_metrics.parquet"))
    billed = dict(zip(frame["partition"], frame["billed_cost"], strict=True))
    assert billed[PARTITION] == pytest.approx(_usd(6))  # 3 stored, 2 paid in flight, 1 failed
    assert pd.isna(billed[OTHER_PARTITION])  # another backend's: never billed here

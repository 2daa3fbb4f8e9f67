"""The plan (``flux_pipeline.builder.cost``) against real builds on the emulator over HTTP."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from flux_pipeline.builder import BuildReport, build_partition
from flux_pipeline.builder.cost import CostPlan, PartitionCost, plan_cost, unit_cost
from flux_pipeline.emulator.settings import DEFAULT_PRICE
from flux_pipeline.prompts import partition_requests
from flux_pipeline.store.ledger import Ledger
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.provenance import service_backend
from flux_pipeline.store.storage import ObjectStore
from tests.support.cost_support import DAYS
from tests.support.loopback import fast_config

# The emulator named as the service (SEGMIND_BASE_URL, SEGMIND_API_KEY), as for every cost test.
pytestmark = pytest.mark.usefixtures("service_env")

Build = Callable[..., BuildReport]


def plan(
    store: ObjectStore, table: pd.DataFrame, days: tuple[str, ...] = DAYS[:1], **kw: Any
) -> CostPlan:
    backend = service_backend(os.environ["SEGMIND_BASE_URL"])  # conftest's service_env
    return plan_cost(store, {d: partition_requests(table, d) for d in days}, backend=backend, **kw)


def counts(cost: PartitionCost) -> tuple[int, int, int, int, int, int]:
    return (
        cost.images,
        cost.reusable,
        cost.failed,
        cost.in_flight,
        cost.to_submit,
        cost.shared,
    )


def test_before_a_build_everything_is_to_submit_and_no_api_call_is_made(
    store: ObjectStore, table: pd.DataFrame, emulator: Any
) -> None:
    before = emulator.stats()["requests"]
    result = plan(store, table, price_per_image=0.25)
    assert emulator.stats()["requests"] == before
    (day,) = result.partitions
    assert counts(day) == (4, 0, 0, 0, 4, 0)
    assert day.estimated_cost == pytest.approx(1.0)
    assert (result.unit.basis, result.unit.value) == ("price_per_image", 0.25)
    assert not store.list("")  # nothing written


def test_after_a_build_nothing_is_to_submit(
    store: ObjectStore, table: pd.DataFrame, build: Build, emulator: Any
) -> None:
    build(DAYS[0])
    submits = emulator.stats()["requests"]["submit"]
    (day,) = plan(store, table).partitions
    assert counts(day) == (4, 3, 1, 0, 0, 0)  # blocked: a final FAILED, reused
    assert day.estimated_cost == 0
    build(DAYS[0])
    assert emulator.stats()["requests"]["submit"] == submits


def test_cost_comes_from_the_reported_cost_over_the_price_flag(
    store: ObjectStore, table: pd.DataFrame, build: Build
) -> None:
    build(DAYS[0])
    result = plan(store, table, DAYS[1:], price_per_image=0.002)
    assert result.unit.basis == "reported"
    assert result.unit.value == pytest.approx(DEFAULT_PRICE)
    assert result.unit.samples == 3  # the COMPLETED generations; FAILED is not billed
    (day,) = result.partitions
    assert counts(day) == (4, 1, 0, 0, 3, 0)  # whale's pinned seed: reused from day one
    assert day.estimated_cost == pytest.approx(3 * DEFAULT_PRICE)


def test_unknown_cost_is_said_so(store: ObjectStore, table: pd.DataFrame) -> None:
    result = plan(store, table)
    assert result.unit.value is None
    assert result.unit.basis == "unknown"
    assert result.total.estimated_cost is None
    assert "--price-per-image" in result.unit.describe()


def test_a_submitted_job_is_in_flight_not_to_submit(
    store: ObjectStore, table: pd.DataFrame, emulator: Any
) -> None:
    fox, _, tower, _ = partition_requests(table, DAYS[0])
    now = datetime.now(UTC)
    Ledger(store, service_backend(emulator.url)).record_submitted(fox.request_key, "req-fox", now)
    (day,) = plan(store, table, price_per_image=1.0).partitions
    assert counts(day) == (4, 0, 0, 1, 3, 0)
    assert day.estimated_cost == 3.0  # the job in flight is already paid
    assert day.in_flight_expired == 0
    Ledger(store, service_backend(emulator.url)).record_submitted(
        tower.request_key, "req-tower", now - timedelta(hours=2)
    )
    (day,) = plan(store, table, price_per_image=1.0).partitions
    assert counts(day) == (4, 0, 0, 2, 2, 0)
    assert day.in_flight_expired == 1  # its result is likely gone: it may be paid again


def test_a_key_shared_across_the_range_is_counted_once(
    store: ObjectStore, table: pd.DataFrame
) -> None:
    result = plan(store, table, DAYS, price_per_image=1.0)
    first, second = result.partitions
    assert counts(first) == (4, 0, 0, 0, 4, 0)
    assert counts(second) == (4, 0, 0, 0, 3, 1)  # whale: sent once, for day one
    assert counts(result.total) == (8, 0, 0, 0, 7, 1)
    assert result.total.estimated_cost == 7.0


def test_plan_matches_what_a_budgeted_build_leaves(
    store: ObjectStore, table: pd.DataFrame, build: Build, emulator: Any
) -> None:
    report = build(DAYS[0], max_new_images=2)
    assert emulator.stats()["requests"]["submit"] == 2
    assert report.engine.budget_refused == 2
    (day,) = plan(store, table).partitions
    assert day.to_submit == 2
    assert day.reusable + day.failed == 2
    build(DAYS[0])
    assert emulator.stats()["requests"]["submit"] == 4
    assert set(emulator.stats()["jobs"]["by_request_key"].values()) == {1}
    assert plan(store, table).partitions[0].to_submit == 0


def test_unit_cost_counts_each_generation_once(store: ObjectStore, build: Build) -> None:
    build(DAYS[0])
    build(DAYS[1])  # whale reused: cached, so not a sample
    lineage = read_lineage(store)
    assert unit_cost(lineage).samples == 5
    doubled = pd.concat([lineage, lineage])  # the same generations again: same estimate
    assert unit_cost(doubled).samples == 5
    priced = lineage.assign(cost=[2.0, None] * (len(lineage) // 2))
    assert unit_cost(priced).value == 2.0  # rows without a reported cost are left out


def test_a_negative_price_is_refused() -> None:
    with pytest.raises(ValueError, match="price_per_image"):
        unit_cost(pd.DataFrame(), -1.0)


def test_plan_on_s3(s3_env: str, table: pd.DataFrame, emulator: Any) -> None:
    import s3fs

    bucket = f"cost-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    store = ObjectStore.from_uri(f"s3://{bucket}/pipeline")
    assert plan(store, table).partitions[0].to_submit == 4
    build_partition(
        partition_requests(table, DAYS[0]),
        partition=DAYS[0],
        store=store,
        engine_config=fast_config(emulator.url),
    )
    result = plan(store, table, DAYS)
    assert [counts(p) for p in result.partitions] == [(4, 3, 1, 0, 0, 0), (4, 1, 0, 0, 3, 0)]
    assert result.unit.basis == "reported"

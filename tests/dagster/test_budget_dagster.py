"""The budget guard end to end through Dagster: ``generated_images`` with ``max_new_images``
against the emulator's own count of submits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from flux_pipeline.builder.cost import plan_cost
from flux_pipeline.prompts import load_prompt_table, partition_requests
from flux_pipeline.resources import ObjectStoreResource, SegmindResource
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.provenance import service_backend
from flux_pipeline.store.storage import ObjectStore
from tests.support.dagster_support import PARTITION, Runner, failure_message, key_from_env
from tests.support.loopback import TEST_KEY

# The emulator named as the service (SEGMIND_BASE_URL, SEGMIND_API_KEY), as for every cost test.
pytestmark = pytest.mark.usefixtures("service_env")

PROMPTS = 12
BUDGET = 5


@pytest.fixture
def twelve_prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "prompts.csv"
    rows = [f"p{n:02d},a lighthouse number {n} at dusk,,1,1:1" for n in range(PROMPTS)]
    path.write_text("\n".join(["prompt_id,prompt,seed,steps,aspect_ratio", *rows, ""]))
    monkeypatch.setenv("FLUX_PROMPTS", str(path))
    return path


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def runner(emulator: Any, root: Path, instance: dg.DagsterInstance, **budget: Any) -> Runner:
    resources = {
        "segmind": SegmindResource(api_key=key_from_env(TEST_KEY), base_url=emulator.url, **budget),
        "storage": ObjectStoreResource(root=str(root)),
    }
    return Runner(resources, instance)


def test_budget_stops_new_images_and_a_bigger_one_continues(
    emulator: Any, tmp_path: Path, instance: dg.DagsterInstance, twelve_prompts: Path
) -> None:
    root = tmp_path / "data"
    store = ObjectStore.from_uri(str(root))
    capped = runner(emulator, root, instance, max_new_images=BUDGET)
    assert capped.prompt_table().success

    capped.partition(PARTITION)
    assert emulator.stats()["requests"]["submit"] == BUDGET
    rows = read_lineage(store)
    assert len(rows) == PROMPTS
    assert (rows["status"] == "COMPLETED").sum() == BUDGET
    refused = rows[rows["status"] == "FAILED"]
    assert refused["error"].str.contains(f"max_new_images={BUDGET}").all()
    table = load_prompt_table(str(twelve_prompts))
    requests = {PARTITION: partition_requests(table, PARTITION)}
    (left,) = plan_cost(store, requests, backend=service_backend(emulator.url)).partitions
    assert (left.reusable, left.to_submit) == (BUDGET, PROMPTS - BUDGET)

    second = runner(emulator, root, instance, max_new_images=100).partition(PARTITION)
    assert second.success, failure_message(second)
    stats = emulator.stats()
    assert stats["requests"]["submit"] == PROMPTS  # exactly the 7 left
    assert sorted(stats["jobs"]["by_request_key"].values()) == [1] * PROMPTS  # none paid twice
    assert (read_lineage(store)["status"] == "COMPLETED").sum() == PROMPTS


def test_a_run_stopped_by_its_budget_ends_with_a_clear_message(
    emulator: Any, tmp_path: Path, instance: dg.DagsterInstance, twelve_prompts: Path
) -> None:
    capped = runner(emulator, tmp_path / "data", instance, max_new_images=BUDGET)
    assert capped.prompt_table().success
    result = capped.partition(PARTITION)
    assert not result.success
    assert (
        f"budget max_new_images={BUDGET} reached: {BUDGET} new images, {PROMPTS - BUDGET} left; "
        "raise the budget and re-run to continue"
    ) in failure_message(result)

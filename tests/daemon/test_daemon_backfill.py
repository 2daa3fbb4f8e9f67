"""An asset backfill as a user runs one: launched through GraphQL like the UI, run by
``dagster-daemon`` under a queued run coordinator and the ``segmind`` pool, against an emulator
over HTTP; then the same backfill again, which must cost nothing and change nothing.

Dagster's loops: the real ``dagster-daemon`` runs every backfill pass (no private API). Each
backfill is launched before its daemon starts, so the daemon's first pass picks it up at once
instead of after its 30 s loop; the first backfill's final status is set by the second daemon's
passes. The queue is
polled every second (``dequeue_interval_seconds: 1``). Under xdist this test starts first and
its waits overlap the rest of the suite (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import dagster as dg
import pandas as pd
import pytest

from flux_pipeline.report.metrics import generation_metrics
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.storage import ObjectStore
from tests.support.daemon_support import DaemonHome, sqlite_dagster_yaml
from tests.support.loopback import TEST_KEY

PARTITIONS = ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"]
#: Four partitions, three per run: two runs (3 + 1), both at once under the pool limit of 2.
PER_RUN = 3
#: Five prompts, one with a pinned seed: its image is the same request in every partition.
TABLE = """prompt_id,prompt,seed,steps,aspect_ratio
fox,"A red fox in fresh snow",,2,1:1
harbor,"Fishing boats in a foggy harbor at dawn",7,2,16:9
tower,"A glass tower reflecting storm clouds",,1,9:16
market,"A spice market under striped awnings",,2,3:2
comet,"A comet over a desert observatory",,1,21:9
"""
PROMPTS = {"fox", "harbor", "tower", "market", "comet"}


class Setup(NamedTuple):
    home: DaemonHome
    emulator: Any


def scenario_env(
    tmp_path: Path, emulator_factory: Callable[..., Any]
) -> tuple[Any, dict[str, str]]:
    """A fast emulator and the environment of the scenario's runs: :data:`TABLE` as the prompt
    table, ``tmp_path/data`` as the storage root, :data:`PER_RUN` partitions per run."""
    emulator = emulator_factory(workers=8, step_time=0.02)
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(TABLE)
    env = {
        "SEGMIND_API_KEY": TEST_KEY,
        "SEGMIND_BASE_URL": emulator.url,
        "FLUX_STORAGE_ROOT": str(tmp_path / "data"),
        "FLUX_PROMPTS": str(prompts),
        "FLUX_MAX_PARTITIONS_PER_RUN": str(PER_RUN),
    }
    return emulator, env


@pytest.fixture
def setup(tmp_path: Path, emulator_factory: Callable[..., Any]) -> Iterator[Setup]:
    """A daemon home whose runs build into ``tmp_path/data`` on a fast emulator."""
    emulator, env = scenario_env(tmp_path, emulator_factory)
    yaml = sqlite_dagster_yaml(max_concurrent_runs=4, segmind_pool_limit=2)
    with DaemonHome(tmp_path / "home", dagster_yaml=yaml, env=env) as home:
        yield Setup(home, emulator)


def _evaluations(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> list[Any]:
    return [
        entry.get_dagster_event().event_specific_data
        for run in runs
        for entry in instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
    ]


def _materialized(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> dict[str, Any]:
    events = [
        entry.asset_materialization
        for run in runs
        for entry in instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        )
    ]
    return {str(event.partition): event.metadata for event in events if event is not None}


@pytest.mark.slow
def test_a_daemon_backfill_packs_partitions_into_runs_and_running_it_again_is_free(
    setup: Setup, tmp_path: Path
) -> None:
    home, emulator = setup
    from flux_pipeline.assets import prompt_table
    from flux_pipeline.resources import ObjectStoreResource

    store = ObjectStore.from_uri(str(tmp_path / "data"))
    instance = home.instance()
    storage = ObjectStoreResource(root=str(tmp_path / "data"))
    assert dg.materialize([prompt_table], resources={"storage": storage}, instance=instance).success

    # Launched with no daemon running; the daemon's first pass, at its start, takes it up.
    first_id = home.launch_backfill("generated_images", PARTITIONS)
    with home.daemon():
        first = home.wait_for_runs(first_id)

    assert len(first.runs) == -(-len(PARTITIONS) // PER_RUN) == 2
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in first.runs)
    materialized = _materialized(instance, first.runs)
    assert sorted(materialized) == PARTITIONS
    lineages = {}
    for partition in PARTITIONS:
        lineage = pd.read_parquet(
            tmp_path / "data" / "lineage" / f"partition={partition}" / "lineage.parquet"
        )
        assert sorted(lineage["prompt_id"]) == sorted(PROMPTS)  # one row per prompt
        assert set(lineage["status"]) == {"COMPLETED"}
        assert all(Path(uri).is_file() for uri in lineage["image_uri"])
        unpinned = lineage[lineage["prompt_id"] != "harbor"]
        assert not unpinned["cached"].any()  # generated for this very partition
        assert materialized[partition]["completed"].value == 5
        lineages[partition] = lineage.sort_values("prompt_id", ignore_index=True)
    harbor = {p: frame.set_index("prompt_id").loc["harbor"] for p, frame in lineages.items()}
    generated = [p for p, row in harbor.items() if not row["cached"]]
    assert len(generated) == 1  # the shared image: made for one partition, reused by the others
    assert len({row["request_id"] for row in harbor.values()}) == 1
    asked = emulator.stats()["jobs"]["by_request_key"]
    assert len(asked) == 4 * len(PARTITIONS) + 1
    assert set(asked.values()) == {1}  # every request key submitted exactly once
    evaluations = _evaluations(instance, first.runs)
    assert sorted((e.check_name, e.partition) for e in evaluations) == sorted(
        (check, partition)
        for check in (
            "one_row_per_prompt",
            "images_match_sha256",
            "failure_rate_below_threshold",
            "images_pass_quality",
            "lineage_schema_as_declared",
        )
        for partition in PARTITIONS
    )
    assert all(evaluation.passed for evaluation in evaluations)
    metrics = generation_metrics(read_lineage(store))
    requests = emulator.stats()["requests"]

    second_id = home.launch_backfill("generated_images", PARTITIONS)
    with home.daemon():
        # The first pass of this daemon also closes the first backfill.
        assert home.wait_for_backfill(first_id).status == "COMPLETED_SUCCESS"
        second = home.wait_for_runs(second_id)

    assert len(second.runs) == 2
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in second.runs)
    assert emulator.stats()["requests"] == requests  # not one API request
    for partition, before in lineages.items():
        after = pd.read_parquet(
            tmp_path / "data" / "lineage" / f"partition={partition}" / "lineage.parquet"
        )
        pd.testing.assert_frame_equal(after.sort_values("prompt_id", ignore_index=True), before)
    pd.testing.assert_frame_equal(generation_metrics(read_lineage(store)), metrics)
    again = _materialized(instance, second.runs)
    assert sorted(again) == PARTITIONS
    assert {meta["cached"].value for meta in again.values()} == {0, 1}  # harbor, elsewhere

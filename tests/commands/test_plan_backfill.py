"""``flux-pipeline plan --backfill ID``: the partitions a backfill in DAGSTER_HOME targets."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.backfill import PartitionBackfill

from flux_pipeline.assets import generated_images
from flux_pipeline.assets.backfill_partitions import BackfillLookupError, backfill_partitions
from flux_pipeline.definitions import defs
from tests.support import forked_cli
from tests.support.cost_support import DAYS, plan, plan_json

# The emulator named as the service (SEGMIND_BASE_URL, SEGMIND_API_KEY), as for every cost test.
pytestmark = pytest.mark.usefixtures("service_env")


def add_backfill(home: Path, backfill_id: str, partitions: list[str]) -> None:
    """Record an asset backfill of ``generated_images`` as the UI's launch does."""
    home.mkdir(exist_ok=True)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id,
            asset_graph=defs.resolve_asset_graph(),
            partition_names=partitions,
            asset_selection=[generated_images.key],
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=None,
            description=None,
            run_config=None,
        )
        instance.add_backfill(backfill)


def test_backfill_partitions_are_planned(tmp_path: Path, table_csv: Path) -> None:
    home = tmp_path / "dagster_home"
    add_backfill(home, "bkfl0001", [DAYS[1], DAYS[0]])
    common = ("--prompts", str(table_csv), "--root", str(tmp_path / "data"))
    body = plan_json("--backfill", "bkfl0001", *common, DAGSTER_HOME=str(home))
    assert [p["partition"] for p in body["partitions"]] == list(DAYS)
    assert body["total"]["to_submit"] == 7  # whale's pinned key counted once


def test_an_unknown_backfill_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "dagster_home"
    add_backfill(home, "bkfl0001", [DAYS[0]])
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with pytest.raises(BackfillLookupError, match="no backfill 'nope' in the Dagster instance"):
        backfill_partitions("nope")
    assert backfill_partitions("bkfl0001") == [DAYS[0]]


def test_backfill_needs_dagster_home(tmp_path: Path) -> None:
    run = plan("--backfill", "bkfl0001", "--root", str(tmp_path / "data"), DAGSTER_HOME="")
    assert run.returncode == 1
    assert "cannot open the Dagster instance" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_job_backfill_of_synthetic_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``dagster job backfill`` (runs queued, no daemon to launch them) records its partitions."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    launched = forked_cli.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            *("job", "backfill", "-m", "flux_pipeline.definitions", "-j", "synthetic_build"),
            *("--from", DAYS[0], "--to", DAYS[1], "--noprompt"),
        ],
        env=os.environ,
        cwd=tmp_path,
    )
    found = re.search(r"Launched backfill job `(\w+)`", launched.stdout + launched.stderr)
    assert found, launched.stdout + launched.stderr
    assert backfill_partitions(found.group(1)) == list(DAYS)

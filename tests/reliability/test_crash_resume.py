"""SIGKILL a real ``dagster asset materialize`` in the middle of a partition, then run it again.

The materialization runs in its own process group, against an emulator in this process that is
slow enough (4 slots) for the partition to take seconds; it is killed, whole group, once the
ledger shows images finished and jobs in flight. Meanwhile a reader keeps reading the lineage
dataset (a previously built partition makes it exist) and must never fail.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.dataset as ds
import pytest

from flux_pipeline.builder import build_partition
from flux_pipeline.store.storage import ObjectStore
from tests.support.loopback import TEST_KEY
from tests.support.reliability_support import (
    PARTITION,
    Materialization,
    audit_killed,
    audit_resumed,
    audit_visible_files,
    engine_config,
    materialize_in_process,
    states,
    table_requests,
    wait_for_mid_build,
    write_table,
)

PROMPTS = 48
PREVIOUS = "2026-11-19"


class LineageReader(threading.Thread):
    """Reads the lineage dataset the way users do, in a loop, recording every failure."""

    def __init__(self, lineage_dir: Path) -> None:
        super().__init__(daemon=True)
        self.lineage_dir = lineage_dir
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self.row_counts: set[int] = set()
        self.reads = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                dataset = ds.dataset(self.lineage_dir, format="parquet", partitioning="hive")
                self.row_counts.add(dataset.to_table().num_rows)
            except Exception as exc:  # anything a reader could hit is a failure of the test
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.reads += 1
            self.stopping.wait(0.02)

    def stop(self) -> None:
        self.stopping.set()
        self.join()


@pytest.mark.slow
def test_a_killed_materialization_resumes_without_paying_twice(
    emulator_factory: Callable[..., Any], tmp_path: Path
) -> None:
    emu = emulator_factory(workers=4, step_time=0.1)
    table = write_table(tmp_path / "prompts.csv", PROMPTS)
    root = tmp_path / "data"
    (tmp_path / "home").mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "FLUX_STORAGE_ROOT": str(root),
        "FLUX_PROMPTS": str(table),
        "SEGMIND_API_KEY": TEST_KEY,
        "SEGMIND_BASE_URL": emu.url,
    }
    requests = {r.request_key: r for r in table_requests(table, PARTITION)}
    keys = set(requests)
    store = ObjectStore.from_uri(str(root))
    Materialization(env, tmp_path, "--select", "prompt_table").finish()
    build_partition(
        table_requests(table, PREVIOUS),
        partition=PREVIOUS,
        store=store,
        engine_config=engine_config(emu.url),
    )
    reader = LineageReader(root / "lineage")
    reader.start()

    partition = ("--select", "generated_images", "--partition", PARTITION)
    run = Materialization(env, tmp_path, *partition)
    wait_for_mid_build(run, store, keys)
    run.kill_group()

    killed = audit_killed(emu, store, keys)
    assert audit_visible_files(root, killed.ledger) >= len(killed.done)
    assert not (root / "lineage" / f"partition={PARTITION}").exists()

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        rerun = materialize_in_process(instance, emu.url, root)
    reader.stop()
    assert rerun.success
    checks = rerun.get_asset_check_evaluations()
    assert len(checks) == 5
    assert all(check.passed for check in checks)

    lineage = audit_resumed(emu, store, requests, killed)
    for key in killed.done:
        assert not bool(lineage.loc[key, "cached"])  # generated for this same partition
    assert audit_visible_files(root, states(store, keys)) == 2 * PROMPTS

    assert reader.errors == []
    assert reader.reads > 20
    assert reader.row_counts <= {PROMPTS, 2 * PROMPTS}  # a partition's lineage: all or nothing
    assert 2 * PROMPTS in reader.row_counts

"""The ``segmind`` pool of ``deploy/local/dagster.yaml`` (limit 1) really is exclusive: a backfill
of 3 runs never has two in progress at once (run storage's start and end times), a run started
from a shell beside it never builds while a backfill run builds (the account slot), and every run
paces its API requests at the account's whole ``requests_per_minute`` (its one slot's share),
which the pacer never over-schedules (tests/segmind/test_segmind_quota.py). How many 429s the
wire then sees depends on the machine's load: that share is a figure of bench/bench_quota.py.

The overlap of the shell run with a backfill run is arranged, not hoped for: the test holds the
account slot itself (the gate) until the first backfill run and the shell run both say in their
run logs that they wait for it, then releases it. A shell run's start-up (importing Dagster and
the code location, about 7 s of CPU) can otherwise outlast a whole backfill run on a loaded
machine, which is how this test used to fail under the suite's load.

Dagster's loops: the real ``dagster-daemon`` on ``deploy/local/dagster.yaml`` unchanged (the
queue polled every second); the backfill is launched before the daemon starts, so its first pass
requests the runs at once, and the test waits for the runs, not for the backfill's final status
(no 30 s pass is waited out).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import yaml

from flux_pipeline.assets.segmind_pool import pool_share
from flux_pipeline.store.account_slot import slot_key
from flux_pipeline.store.claims import Claims
from flux_pipeline.store.storage import ObjectStore
from tests.support import forked_cli
from tests.support.daemon_support import DaemonHome
from tests.support.loopback import TEST_KEY
from tests.support.recovery_support import DAGSTER, LOCAL_DAGSTER_YAML, ledger_states, write_table

PARTITIONS = [f"2026-11-{day:02d}" for day in range(20, 26)]
SHELL_PARTITION = "2026-11-26"
PER_RUN = 2
#: The account's quota: QUOTA API requests per WINDOW seconds (a scaled minute), all counted.
QUOTA, WINDOW = 16, 4.0
MATERIALIZE = [str(DAGSTER), "asset", "materialize", "-m", "flux_pipeline.definitions"]
MATERIALIZE += ["--select", "generated_images"]
RUN_CONFIG = {"resources": {"segmind": {"config": {"requests_per_minute": QUOTA * 60 / WINDOW}}}}
#: The pace each run logs: requests_per_minute shared by the pool's one slot.
PACE = f"{QUOTA * 60 / WINDOW:g} API requests/min = requests_per_minute {QUOTA * 60 / WINDOW:g} / 1"
#: What a build logs while another holds the account's only slot.
WAITING = "waiting for one of the 1 account slot(s)"


def _wait_until(
    ready: Callable[[], bool], what: str, tail: Callable[[], str], timeout: float = 600.0
) -> None:
    """Poll ``ready`` until it holds; ``timeout`` only bounds a hang (it is no pass criterion)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what} never happened:\n{tail()}"
        time.sleep(0.5)


def _waits_for_the_slot(instance: dg.DagsterInstance, run: dg.DagsterRun | None) -> bool:
    """Whether ``run`` has logged that it waits for the account slot. Its event log is read
    only once it has started: reading a run's log first creates its SQLite file, which the run's
    own process is about to create."""
    if run is None:
        return False
    record = instance.get_run_record_by_id(run.run_id)
    if record is None or record.dagster_run.status != dg.DagsterRunStatus.STARTED:
        return False
    return any(WAITING in (entry.message or "") for entry in instance.all_logs(run.run_id))


def _shell_run(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": SHELL_PARTITION}))
    return runs[0] if runs else None


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of ``(start, end)`` intervals that overlap at one instant."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = now = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        now += step
        most = max(most, now)
    return most


def _run_partitions(run: dg.DagsterRun) -> list[str]:
    """The partitions of a backfill run's range."""
    first = run.tags["dagster/asset_partition_range_start"]
    last = run.tags["dagster/asset_partition_range_end"]
    return [p for p in PARTITIONS if first <= p <= last]


def _build_span(root: Path, partitions: list[str]) -> tuple[float, float]:
    """From the first submit to the last stored image of ``partitions`` (lineage clocks)."""
    lineage = pd.concat(
        pd.read_parquet(root / "lineage" / f"partition={p}" / "lineage.parquet") for p in partitions
    )
    made = lineage[~lineage["cached"]]
    return made["submitted_at"].min().timestamp(), made["completed_at"].max().timestamp()


@pytest.mark.slow
def test_the_pool_admits_one_run_at_a_time_and_a_shell_run_shares_the_account(
    tmp_path: Path, emulator_factory: Callable[..., Any]
) -> None:
    emulator = emulator_factory(
        workers=2, step_time=0.25, quota_per_minute=QUOTA, quota_counts="all", quota_window=WINDOW
    )
    table = write_table(tmp_path / "prompts.csv", prompts=12)
    root = tmp_path / "data"
    env = {
        "SEGMIND_API_KEY": TEST_KEY,
        "SEGMIND_BASE_URL": emulator.url,
        "FLUX_STORAGE_ROOT": str(root),
        "FLUX_PROMPTS": str(table),
        "FLUX_MAX_PARTITIONS_PER_RUN": str(PER_RUN),
    }
    store = ObjectStore.from_uri(str(root))
    # The gate outlives any start-up: its lease is an hour, and this process stays alive.
    gate = Claims(store, owner="test-gate", lease=3600)
    dagster_yaml = LOCAL_DAGSTER_YAML.read_text()
    with DaemonHome(tmp_path / "home", dagster_yaml=dagster_yaml, env=env) as home:
        from flux_pipeline.assets import prompt_table
        from flux_pipeline.resources import ObjectStoreResource

        instance = home.instance()
        storage = {"storage": ObjectStoreResource(root=str(root))}
        assert dg.materialize([prompt_table], resources=storage, instance=instance).success
        backfill_id = home.launch_backfill("generated_images", PARTITIONS, run_config=RUN_CONFIG)
        config = tmp_path / "run.yaml"
        config.write_text(yaml.safe_dump(RUN_CONFIG))
        assert gate.claim(slot_key(0))  # the account's only slot: no build starts until released

        with home.daemon():

            def first_run_waits() -> bool:
                runs = home.backfill_runs(backfill_id)
                return _waits_for_the_slot(instance, runs[0] if runs else None)

            _wait_until(
                first_run_waits, "the first backfill run waiting for the slot", home.log_tail
            )
            shell_log = tmp_path / "shell.log"
            shell = forked_cli.start(
                [*MATERIALIZE, "--partition", SHELL_PARTITION, "-c", str(config)],
                env=os.environ,
                output=shell_log,
            )

            def shell_run_waits() -> bool:
                return _waits_for_the_slot(instance, _shell_run(instance))

            _wait_until(shell_run_waits, "the shell run waiting for the slot", shell_log.read_text)
            assert not ledger_states(store)  # nothing was built while the gate held the slot
            gate.release([slot_key(0)])
            outcome = home.wait_for_runs(backfill_id, timeout=600)
            assert shell.wait(timeout=600) == 0, shell_log.read_text()[-4000:]
        limit = pool_share(instance).slots

    assert limit == 1
    assert len(outcome.runs) == len(PARTITIONS) // PER_RUN == 3
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in outcome.runs)
    records = [instance.get_run_record_by_id(run.run_id) for run in outcome.runs]
    spans = [(r.start_time, r.end_time) for r in records if r and r.start_time and r.end_time]
    assert len(spans) == 3
    assert _most_at_once(spans) <= limit  # from run storage's start and end times

    # The shell run (in the same run storage, outside the queue) was in progress while a
    # backfill run was (arranged by the gate), yet never built while one built: it holds the
    # account slot too.
    (shell_run,) = [
        record
        for record in instance.get_run_records()
        if record.dagster_run.tags.get("dagster/partition") == SHELL_PARTITION
    ]
    assert shell_run.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert shell_run.start_time is not None
    assert shell_run.end_time is not None
    assert _most_at_once([(shell_run.start_time, shell_run.end_time), *spans]) == 2
    shell_log_lines = [
        entry.message or "" for entry in instance.all_logs(shell_run.dagster_run.run_id)
    ]
    assert any("account slot 1 of 1" in line for line in shell_log_lines)
    builds = [_build_span(root, _run_partitions(run)) for run in outcome.runs]
    assert _most_at_once([_build_span(root, [SHELL_PARTITION]), *builds]) == 1

    # Every run, the shell's too, paces at the account's whole quota: one slot, one share.
    for run in [shell_run.dagster_run, *outcome.runs]:
        lines = [entry.message or "" for entry in instance.all_logs(run.run_id)]
        assert any(PACE in line for line in lines), f"run {run.run_id} did not pace at {PACE}"
    assert set(emulator.stats()["jobs"]["by_request_key"].values()) == {1}

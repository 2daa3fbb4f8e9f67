"""Run heartbeats (``_runs/{run_id}.json``) and the account slot: real files and processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from flux_pipeline.store import account_slot
from flux_pipeline.store.account_slot import AccountSlot, slot_key
from flux_pipeline.store.claims import ClaimInfo
from flux_pipeline.store.layout import claim_path, heartbeat_path
from flux_pipeline.store.process_identity import this_process
from flux_pipeline.store.run_heartbeat import RunHeartbeat, dead_because, read_heartbeat
from flux_pipeline.store.storage import ObjectStore


def _gone_pid() -> int:
    """The pid of a process of this machine that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_heartbeat_is_renewed_and_is_not_dead(local_store: ObjectStore) -> None:
    beat = RunHeartbeat(local_store, "run-1", lease=4.0)  # renewed every second
    beat.start()
    first = read_heartbeat(local_store, "run-1")
    assert first is not None
    later = first
    while later.renewed_at == first.renewed_at:  # until the first renewal (pytest bounds a hang)
        time.sleep(0.05)
        renewed = read_heartbeat(local_store, "run-1")
        assert renewed is not None
        later = renewed
    beat.stop()
    assert later.renewed_at > first.renewed_at
    assert dead_because(later) is None
    assert (later.host, later.process_scope, later.pid) == this_process()
    last = read_heartbeat(local_store, "run-1")
    assert last is not None  # kept at the end: the run is still STARTED for a moment
    assert last.renewed_at >= later.renewed_at


def test_a_heartbeat_is_dead_once_its_process_is_gone_here_or_its_lease_lapsed(
    local_store: ObjectStore,
) -> None:
    RunHeartbeat(local_store, "run-2", lease=60).start()
    beat = read_heartbeat(local_store, "run-2")
    assert beat is not None
    gone = replace(beat, pid=_gone_pid())
    assert "no longer exists" in (dead_because(gone) or "")
    elsewhere = replace(gone, host="another-machine")  # its pid means nothing here
    assert dead_because(elsewhere) is None
    later = beat.renewed_at + timedelta(seconds=61)
    assert "past its lease of 60 s" in (dead_because(elsewhere, later) or "")


def test_an_unreadable_heartbeat_is_an_error_not_a_death(local_store: ObjectStore) -> None:
    local_store.write_atomic(heartbeat_path("run-3"), b"{not json")
    with pytest.raises(ValueError, match="unreadable heartbeat"):
        read_heartbeat(local_store, "run-3")
    assert read_heartbeat(local_store, "never-started") is None


def test_one_slot_admits_one_build_at_a_time_and_two_slots_two(
    local_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(account_slot, "FIRST_POLL", 0.05)

    async def scenario(slots: int) -> int:
        inside, most = 0, 0

        async def work() -> None:
            nonlocal inside, most
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.3)
            inside -= 1

        builds = [AccountSlot(local_store, slots=slots, owner=f"run-{i}") for i in range(3)]
        await asyncio.gather(*(build.hold(work) for build in builds))
        return most

    assert asyncio.run(scenario(1)) == 1
    assert asyncio.run(scenario(2)) == 2


def test_a_slot_whose_holder_died_on_this_machine_is_taken_over(local_store: ObjectStore) -> None:
    host, scope, _ = this_process()
    now = datetime.now(UTC)
    dead = ClaimInfo(slot_key(0), "killed-run", host, _gone_pid(), scope, now, now, 120.0)
    local_store.write_atomic(claim_path(slot_key(0)), dead.to_json())
    said: list[str] = []
    slot = AccountSlot(local_store, slots=1, owner="retry", say=said.append)

    async def work() -> str:
        return "built"

    assert asyncio.run(asyncio.wait_for(slot.hold(work), 10)) == "built"
    assert said == ["holding account slot 1 of 1"]

"""A backfill whose Dagster side is SIGKILLed mid-build, then restarted, and must finish by itself.

Shared by the SQLite test (``dagster-daemon`` with its own code server, the layout of ``dagster
dev``), the Postgres one (a ``dagster code-server start`` process, an S3 root on moto, as in
``deploy/docker-compose.yaml``) and ``python -m bench recovery``. The scenario: 4 partitions of
:data:`PROMPTS` prompts, 2 per run, so 2 runs, one at a time in the ``segmind`` pool; the process
tree running the first run is killed once its ledger shows images stored and jobs in flight; the
killed side is started again; nobody touches anything else. Then the ``flux_dead_runs`` sensor
fails the dead run, run retries launch it again, and the retry re-attaches the jobs in flight.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd

from flux_pipeline.prompts import load_prompt_table, partition_requests
from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.store.layout import LEDGER_DIR
from flux_pipeline.store.storage import ObjectStore, last_record
from tests.support import forked_cli
from tests.support.loopback import free_port

if TYPE_CHECKING:
    from flux_pipeline.emulator.server import RunningEmulator

PARTITIONS = ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"]
PER_RUN = 2
PROMPTS = 12
#: The heartbeat lease and sensor interval of the scenario: short, so that the runs after the
#: restart, which last several leases, show the sensor leaves live runs alone.
LEASE, MONITOR_INTERVAL = 3.0, 1
#: Accepted submits whose id may not have reached the ledger at the kill (the one window).
WINDOW_LIMIT = 2
LOCAL_DAGSTER_YAML = Path(__file__).resolve().parents[2] / "deploy" / "local" / "dagster.yaml"
DAGSTER = Path(sys.executable).with_name("dagster")


def write_table(path: Path, prompts: int = PROMPTS) -> Path:
    """``prompts`` prompts of 1 to 4 steps."""
    rows = [
        {"prompt_id": f"p{i:03d}", "prompt": f"a lighthouse on cliff {i}", "steps": 1 + i % 4}
        for i in range(prompts)
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def requests_by_partition(table: Path) -> dict[str, list[GenerationRequest]]:
    loaded = load_prompt_table(str(table))
    return {partition: partition_requests(loaded, partition) for partition in PARTITIONS}


def scenario_env(
    root: str, table: Path, emulator_url: str, key: str, *, short_leases: bool = True
) -> dict[str, str]:
    """What the process running the code location needs: Segmind, storage, and the short
    :data:`LEASE` and :data:`MONITOR_INTERVAL` (the shipped defaults without ``short_leases``)."""
    env = {
        "SEGMIND_API_KEY": key,
        "SEGMIND_BASE_URL": emulator_url,
        "FLUX_STORAGE_ROOT": root,
        "FLUX_PROMPTS": str(table),
        "FLUX_MAX_PARTITIONS_PER_RUN": str(PER_RUN),
    }
    if short_leases:
        env["FLUX_RUN_LEASE"] = str(LEASE)
        env["FLUX_RUN_MONITOR_INTERVAL"] = str(MONITOR_INTERVAL)
    return env


def ledger_states(store: ObjectStore) -> dict[str, dict[str, Any]]:
    found = store.read_many(store.list(LEDGER_DIR))
    return {(body := json.loads(last_record(data)))["request_key"]: body for data in found.values()}


def wait_for_mid_build(
    store: ObjectStore, alive: Callable[[], bool], *, completed: int = 3, timeout: float = 600
) -> None:
    """Until the ledger shows ``completed`` images stored and jobs in flight."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert alive(), "the Dagster side died before it was killed"
        states = [entry["state"] for entry in ledger_states(store).values()]
        if states.count("COMPLETED") >= completed and states.count("SUBMITTED") >= 3:
            return
        time.sleep(0.05)
    raise TimeoutError("the build never reached the middle of the first run")


def kill_group(process: subprocess.Popen[bytes] | forked_cli.Command) -> None:
    """SIGKILL the process group ``process`` leads, and wait until none of it is left."""
    pid = process.pid
    os.killpg(pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"processes of the killed group {pid} are still alive")


#: Bounds a hang while the killed build's last requests are served (no pass criterion).
SETTLE_TIMEOUT = 120.0


def settled_submits(emulator: RunningEmulator) -> dict[str, int]:
    """``by_request_key`` once the submits on the wire at the kill have been served: the
    emulator holds no connection and answers no request any more (the killed clients' sockets
    are closed, so every byte they sent has been read and answered or dropped)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while emulator.connections():
        assert time.monotonic() < deadline, "the emulator still serves the killed build"
        time.sleep(0.05)
    return dict(emulator.stats()["jobs"]["by_request_key"])


@dataclass(frozen=True)
class Killed:
    """What the kill left: the ledger's in-flight jobs and the submits that never reached it."""

    in_flight: dict[str, str]
    window: set[str]


def audit_killed(emulator: RunningEmulator, store: ObjectStore) -> Killed:
    accepted = settled_submits(emulator)
    ledger = ledger_states(store)
    in_flight = {k: e["request_id"] for k, e in ledger.items() if e["state"] == "SUBMITTED"}
    sending = {k for k, e in ledger.items() if e["state"] == "SENDING"}  # answer never seen
    assert in_flight
    assert all(accepted.get(key) == 1 for key in ledger if key not in sending)
    assert all(accepted.get(key, 0) <= 1 for key in sending)
    return Killed(in_flight, set(accepted) - set(ledger))


def audit_whole(
    store: ObjectStore,
    requests: dict[str, list[GenerationRequest]],
    killed: Killed,
    submits: dict[str, int],
) -> int:
    """Every partition whole (one COMPLETED row per prompt, images matching their sha256), the
    jobs in flight re-attached (same request ids), every key submitted once but the window's
    (at most :data:`WINDOW_LIMIT`, twice). Returns the images paid twice."""
    import hashlib

    for partition, batch in requests.items():
        lineage = pd.read_parquet(store.uri(f"lineage/partition={partition}/lineage.parquet"))
        assert sorted(lineage["prompt_id"]) == sorted(r.key for r in batch)
        assert set(lineage["status"]) == {"COMPLETED"}
        for row in lineage.itertuples():
            data = store.read_bytes(store.relpath(str(row.image_uri)) or "")
            assert hashlib.sha256(data).hexdigest() == row.image_sha256
            if row.request_key in killed.in_flight:
                assert row.request_id == killed.in_flight[str(row.request_key)]
    keys = {r.request_key for batch in requests.values() for r in batch}
    assert set(submits) == keys
    twice = {key for key, n in submits.items() if n > 1}
    assert twice <= killed.window, "a key whose id was in the ledger was submitted again"
    assert all(submits[key] == 2 for key in twice)
    assert len(twice) <= WINDOW_LIMIT, f"{len(twice)} images paid twice"
    return len(twice)


def audit_runs(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> dg.DagsterRun:
    """The killed run failed by ``flux_dead_runs`` saying why, and retried; every other run
    succeeded, and the longest one lasted more than two heartbeat leases under a sensor ticking
    every second (alive and slow: never failed). Returns the killed run."""
    failed = [run for run in runs if run.status == dg.DagsterRunStatus.FAILURE]
    assert len(failed) == 1, [(run.run_id, run.status) for run in runs]
    (killed,) = failed
    failures = instance.all_logs(killed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert any("flux_dead_runs" in (entry.message or "") for entry in failures)
    assert any("no longer exists" in (entry.message or "") for entry in failures)
    others = [run for run in runs if run is not killed]
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in others)
    assert any(run.parent_run_id == killed.run_id for run in others)  # the retry
    records = [instance.get_run_record_by_id(run.run_id) for run in others]
    lasted = [r.end_time - r.start_time for r in records if r and r.start_time and r.end_time]
    assert len(lasted) == len(others)
    assert max(lasted) > 2 * LEASE, lasted
    return killed


def all_runs(instance: dg.DagsterInstance, backfill_id: str) -> list[dg.DagsterRun]:
    """The backfill's runs and their retries, oldest first."""
    records = instance.get_run_records(filters=dg.RunsFilter.for_backfill(backfill_id))
    return [r.dagster_run for r in sorted(records, key=lambda r: r.create_timestamp)]


def code_server(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``dagster code-server start`` of the code location on ``port``, in its own session."""
    command = [str(DAGSTER), "code-server", "start", "-h", "127.0.0.1", "-p", str(port)]
    with log.open("ab") as out:
        return subprocess.Popen(
            [*command, "-m", "flux_pipeline.definitions", "--location-name", "flux_pipeline"],
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for_grpc(port: int, process: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the code server exited"
        check = forked_cli.run(
            [str(DAGSTER), "api", "grpc-health-check", "-p", str(port)], env=os.environ
        )
        if check.returncode == 0:
            return
        time.sleep(0.5)
    raise TimeoutError(f"no code server answered on port {port}")


def grpc_workspace(port: int) -> str:
    return f"""load_from:
  - grpc_server:
      host: 127.0.0.1
      port: {port}
      location_name: flux_pipeline
"""


@contextmanager
def moto_process(log: Path) -> Iterator[str]:
    """``moto_server`` (S3 and the rest, in memory) as a process on a free loopback port."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("moto_server")),
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "moto_server exited"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)

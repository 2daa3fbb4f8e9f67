"""A temporary ``DAGSTER_HOME`` with ``dagster-daemon run``, and asset backfills launched as the UI
launches them (GraphQL ``launchPartitionBackfill``, in-process against the workspace).

Reusable with any instance configuration: give :class:`DaemonHome` its own ``dagster.yaml`` text
(Postgres storage, other run-queue limits) and the environment every Dagster process needs::

    with DaemonHome(tmp_path / "home", dagster_yaml=sqlite_dagster_yaml(), env=env) as home:
        backfill_id = home.launch_backfill("generated_images", partitions)  # before the daemon:
        with home.daemon():                                                  # it picks it up
            outcome = home.wait_for_runs(backfill_id)                        # at once on start

Dagster's backfill daemon evaluates backfills in a fixed 30 s loop (``DEFAULT_DAEMON_INTERVAL_
SECONDS``, no setting shortens it); its first pass runs as soon as the daemon starts. Launching a
backfill while no daemon runs and then starting one is the quick path; a backfill launched while
the daemon runs waits for its next pass (up to 30 s), and its status turns COMPLETED on the pass
after its last run ends: :meth:`DaemonHome.wait_for_runs` returns when every partition is
requested and every run has ended, :meth:`DaemonHome.wait_for_backfill` also waits for that
status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import dagster as dg

from tests.support import forked_cli

DAGSTER_DAEMON = Path(sys.executable).with_name("dagster-daemon")
#: The code location as the project ships it (``workspace.yaml``).
MODULE, LOCATION = "flux_pipeline.definitions", "flux_pipeline"
WORKSPACE_YAML = f"""load_from:
  - python_module:
      module_name: {MODULE}
      location_name: {LOCATION}
"""
#: Backfill states after which the daemon does nothing more for it.
FINAL_BACKFILL_STATES = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

LAUNCH_PARTITION_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""


def sqlite_dagster_yaml(
    *, max_concurrent_runs: int = 4, segmind_pool_limit: int = 2, dequeue_interval_seconds: int = 1
) -> str:
    """An instance on the default SQLite storage under ``DAGSTER_HOME``: a queued run coordinator
    that runs ``max_concurrent_runs`` at once (polled every ``dequeue_interval_seconds``), every
    pool (so ``segmind``) limited to ``segmind_pool_limit`` slots, telemetry off."""
    return f"""run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: {dequeue_interval_seconds}
concurrency:
  runs:
    max_concurrent_runs: {max_concurrent_runs}
  pools:
    default_limit: {segmind_pool_limit}
run_monitoring:
  enabled: true
  poll_interval_seconds: 5
telemetry:
  enabled: false
"""


@dataclass(frozen=True)
class BackfillOutcome:
    """How a backfill ended: its final status and the runs it made (oldest first)."""

    backfill_id: str
    status: str
    runs: list[dg.DagsterRun]
    seconds: float


class DaemonHome:
    """A ``DAGSTER_HOME`` holding ``dagster.yaml`` and ``workspace.yaml``.

    While open (``with``), ``env`` is also set in this process (the instance and the GraphQL
    workspace resolve it here; the daemon, its code server and its runs inherit it) and restored
    on exit; a daemon still running is stopped. The daemon's output goes to ``daemon.log`` in
    the home, quoted by :meth:`wait_for_backfill` when it times out.
    """

    def __init__(
        self,
        path: Path,
        *,
        dagster_yaml: str,
        env: Mapping[str, str],
        workspace_yaml: str = WORKSPACE_YAML,
        daemon_base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.env = {**env, "DAGSTER_HOME": str(path)}
        #: The daemon's environment under ``env`` (default: this process's, when it starts).
        self.daemon_base_env = daemon_base_env
        self.workspace = path / "workspace.yaml"
        self.log_path = path / "daemon.log"
        self._dagster_yaml = dagster_yaml
        self._workspace_yaml = workspace_yaml
        self._saved_env: dict[str, str | None] = {}
        self._stack = ExitStack()
        self._instance: dg.DagsterInstance | None = None

    def __enter__(self) -> DaemonHome:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "dagster.yaml").write_text(self._dagster_yaml)
        self.workspace.write_text(self._workspace_yaml)
        self._saved_env = {name: os.environ.get(name) for name in self.env}
        os.environ.update(self.env)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self._stack.close()
        finally:
            for name, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def instance(self) -> dg.DagsterInstance:
        """The instance of this home (opened once, closed on exit)."""
        if self._instance is None:
            opened = dg.DagsterInstance.from_config(str(self.path))
            self._instance = self._stack.enter_context(opened)
        return self._instance

    @contextmanager
    def daemon(self, *, ready_timeout: float = 600.0) -> Iterator[forked_cli.Command]:
        """``dagster-daemon run`` on this home's workspace (forked warm: :mod:`.forked_cli`), in
        its own process group; stopped (SIGTERM, then SIGKILL of the group after 20 s) on exit
        with its code server and runs. ``ready_timeout`` only bounds a hang: its code server
        takes about 5 s of CPU to start, and over a minute on a machine loaded many times over."""
        process = forked_cli.start(
            [str(DAGSTER_DAEMON), "run", "-w", str(self.workspace)],
            cwd=self.path,
            env={**(self.daemon_base_env or os.environ), **self.env, "PYTHONUNBUFFERED": "1"},
            output=self.log_path,
        )
        try:
            self._wait_for_heartbeats(process, ready_timeout)
            yield process
        finally:
            _stop_group(process)

    def launch_backfill(
        self,
        asset: str,
        partitions: Sequence[str],
        *,
        title: str | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> str:
        """An asset backfill of ``partitions`` of ``asset``, launched through GraphQL exactly as
        the UI's Materialize dialog does; returns its id. ``run_config`` (``runConfigData``) is
        the run config of every run the backfill makes.

        The GraphQL workspace loads the code location in this process (no code server to start):
        a backfill records asset keys and partitions only, and the daemon builds its runs from its
        own workspace, with the environment of this home.
        """
        from dagster._core.remote_origin import InProcessCodeLocationOrigin
        from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
        from dagster_graphql.test.utils import execute_dagster_graphql

        params: dict[str, Any] = {
            "assetSelection": [{"path": asset.split("/")}],
            "partitionNames": list(partitions),
        }
        if title:
            params["title"] = title
        if run_config is not None:
            params["runConfigData"] = dict(run_config)
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(module_name=MODULE), location_name=LOCATION
        )
        target = InProcessWorkspaceLoadTarget(origin)
        with WorkspaceProcessContext(self.instance(), target) as process_context:
            result = execute_dagster_graphql(
                process_context.create_request_context(),
                LAUNCH_PARTITION_BACKFILL,
                variables={"params": params},
            )
        answer = result.data["launchPartitionBackfill"]
        if answer["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"launchPartitionBackfill failed: {answer}")
        return str(answer["backfillId"])

    def wait_for_runs(self, backfill_id: str, *, timeout: float = 600.0) -> BackfillOutcome:
        """Wait until the daemon has requested every partition of asset backfill ``backfill_id``
        and all its runs have ended. Its status may still say REQUESTED: the daemon marks it
        COMPLETED on its next pass (up to 30 s later), which :meth:`wait_for_backfill` awaits."""
        return self._wait(backfill_id, timeout, final=False)

    def wait_for_backfill(self, backfill_id: str, *, timeout: float = 600.0) -> BackfillOutcome:
        """Wait until the daemon has finished ``backfill_id``: a final status, all runs ended."""
        return self._wait(backfill_id, timeout, final=True)

    def _wait(self, backfill_id: str, timeout: float, *, final: bool) -> BackfillOutcome:
        instance = self.instance()
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            backfill = instance.get_backfill(backfill_id)
            if backfill is not None and (
                backfill.status.value in FINAL_BACKFILL_STATES
                if final
                else _all_requested(backfill.asset_backfill_data)
            ):
                runs = self.backfill_runs(backfill_id)
                if all(run.is_finished for run in runs):
                    status = backfill.status.value
                    return BackfillOutcome(backfill_id, status, runs, time.monotonic() - start)
            time.sleep(0.5)
        raise TimeoutError(
            f"backfill {backfill_id} not finished after {timeout:.0f}s; daemon log tail:\n"
            + self.log_tail()
        )

    def backfill_runs(self, backfill_id: str) -> list[dg.DagsterRun]:
        """The runs a backfill made, oldest first."""
        records = self.instance().get_run_records(filters=dg.RunsFilter.for_backfill(backfill_id))
        return [record.dagster_run for record in sorted(records, key=lambda r: r.create_timestamp)]

    def log_tail(self, chars: int = 6000) -> str:
        """The end of the daemon's output."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def _wait_for_heartbeats(self, process: forked_cli.Command, timeout: float) -> None:
        """Until this daemon's first heartbeat is stored (older ones may be in the home)."""
        instance = self.instance()
        started, start = time.time(), time.monotonic()
        while time.monotonic() - start < timeout:
            if process.poll() is not None:
                code = process.returncode
                raise RuntimeError(f"dagster-daemon exited ({code}):\n{self.log_tail()}")
            beats = instance.get_daemon_heartbeats().values()
            if any(beat.timestamp >= started for beat in beats):
                return
            time.sleep(0.25)
        tail = self.log_tail()
        raise TimeoutError(f"dagster-daemon sent no heartbeat in {timeout:.0f}s:\n{tail}")


def _all_requested(data: Any) -> bool:
    """Whether an asset backfill's runs cover every partition it targets."""
    return data is not None and (data.target_subset - data.requested_subset).is_empty


def _stop_group(process: forked_cli.Command, grace: float = 20.0) -> None:
    """Stop the daemon's process group (the daemon, its code server and the runs it launched)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()

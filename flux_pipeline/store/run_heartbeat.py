"""A run's heartbeat in the store, ``_runs/{run_id}.json``: the evidence that its worker lives.

While a run of this code location executes, a daemon thread of its worker process keeps one
small object per run: the worker's host, boot and pid namespace, pid, when it started and was
last renewed, and its lease. It is renewed every quarter of the lease, off the build's path (one
small write per ``lease / 4`` seconds, whatever the build does), and renewed a last time when the
run's resources are torn down: the run is still ``STARTED`` for a moment after that, and must not
look dead. Whoever watches the runs deletes the heartbeats of ended ones.

:func:`dead_because` reads it the way :mod:`.claims` reads a claim: a heartbeat is
dead when its lease ran out (``renewed_at + lease`` past, by the reader's clock), or at once when
it was written on the reader's machine by a pid that no longer exists. A run that is slow but
alive keeps renewing, so it is never taken for dead; a run whose renewals fail (a storage outage)
for a whole lease is.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final

from flux_pipeline.settings.environment import FLUX_RUN_LEASE
from flux_pipeline.store.layout import heartbeat_path
from flux_pipeline.store.process_identity import process_gone, this_process
from flux_pipeline.store.storage import ObjectStore

#: Seconds a heartbeat stays fresh without renewal (``FLUX_RUN_LEASE`` overrides it).
DEFAULT_LEASE: Final = FLUX_RUN_LEASE.default

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Heartbeat:
    """One run's heartbeat record, as stored."""

    run_id: str
    host: str
    process_scope: str
    pid: int
    started_at: datetime
    renewed_at: datetime
    lease_s: float

    @property
    def expires_at(self) -> datetime:
        return self.renewed_at + timedelta(seconds=self.lease_s)

    def to_json(self) -> bytes:
        body = asdict(self)
        body["started_at"] = self.started_at.isoformat()
        body["renewed_at"] = self.renewed_at.isoformat()
        return json.dumps(body).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Heartbeat:
        body = json.loads(data)
        return cls(
            run_id=str(body["run_id"]),
            host=str(body["host"]),
            process_scope=str(body["process_scope"]),
            pid=int(body["pid"]),
            started_at=datetime.fromisoformat(body["started_at"]),
            renewed_at=datetime.fromisoformat(body["renewed_at"]),
            lease_s=float(body["lease_s"]),
        )


def lease_from_env() -> float:
    """``FLUX_RUN_LEASE`` seconds if set (positive), else :data:`DEFAULT_LEASE`."""
    return FLUX_RUN_LEASE.read()


def read_heartbeat(store: ObjectStore, run_id: str) -> Heartbeat | None:
    """The run's heartbeat, or None if it has none (never started one, or ended).

    An unreadable object raises ``ValueError``: its reader must not take the run for dead."""
    found = store.read_tagged(heartbeat_path(run_id))
    if found is None:
        return None
    try:
        return Heartbeat.from_json(found.data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"unreadable heartbeat {store.uri(heartbeat_path(run_id))}: {exc!r}"
        ) from exc


def dead_because(heartbeat: Heartbeat, now: datetime | None = None) -> str | None:
    """Why the worker that wrote ``heartbeat`` is dead, or None while it may be alive."""
    now = now or datetime.now(UTC)
    if process_gone(heartbeat.host, heartbeat.process_scope, heartbeat.pid):
        return f"its worker process (pid {heartbeat.pid} on {heartbeat.host}) no longer exists"
    if now >= heartbeat.expires_at:
        late = (now - heartbeat.renewed_at).total_seconds()
        return (
            f"its heartbeat (worker pid {heartbeat.pid} on {heartbeat.host}) was last renewed "
            f"{late:.0f} s ago, past its lease of {heartbeat.lease_s:g} s"
        )
    return None


class RunHeartbeat:
    """Writes and renews ``_runs/{run_id}.json`` from a daemon thread until :meth:`stop`."""

    def __init__(self, store: ObjectStore, run_id: str, *, lease: float | None = None) -> None:
        self.store = store
        self.path = heartbeat_path(run_id)
        self.lease = lease_from_env() if lease is None else lease
        host, scope, pid = this_process()
        now = datetime.now(UTC)
        self._beat = Heartbeat(run_id, host, scope, pid, now, now, self.lease)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"heartbeat-{run_id}", daemon=True)

    def start(self) -> None:
        """Write the first heartbeat, then renew it in the background. A failed write is logged
        and tried again at the next renewal: the run's own storage errors are its build's to
        report; the watcher only sees a heartbeat missing or lapsing."""
        self._write()
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing, after one last renewal (the run ends within its lease)."""
        self._stopping.set()
        self._thread.join()
        self._write()

    def _renew(self) -> None:
        while not self._stopping.wait(self.lease / 4):
            self._write()

    def _write(self) -> None:
        beat = replace(self._beat, renewed_at=datetime.now(UTC))
        try:
            self.store.write_atomic(self.path, beat.to_json())
        except Exception as exc:  # a failed renewal is tried again next time
            log.warning("could not renew the run heartbeat %s (%s)", self.path, exc)

"""Each claim owner's one heartbeat, ``_claims/_owners/{owner}.json``: keeps all its claims live.

A claim owner (a run) renews one heartbeat every quarter lease instead of each of its claims
(one write per run, whatever the number of keys it holds), and ends it once to free all its
claims. Readers judging other owners' claims read each owner's heartbeat at most every eighth
of a lease. The claims themselves are :mod:`.claims`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from flux_pipeline.store.layout import owner_path
from flux_pipeline.store.process_identity import this_process
from flux_pipeline.store.storage import ObjectStore

__all__ = ["OwnerBeat", "OwnerHeartbeats", "now_utc"]


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class OwnerBeat:
    """One owner's heartbeat, as stored: live while ``renewed_at + lease_s`` is ahead."""

    owner: str
    host: str
    pid: int
    process_scope: str
    renewed_at: datetime
    lease_s: float
    ended: bool = False

    def to_json(self) -> bytes:
        body = asdict(self)
        body["renewed_at"] = self.renewed_at.isoformat()
        return json.dumps(body).encode()

    @classmethod
    def from_json(cls, data: bytes) -> OwnerBeat | None:
        """The heartbeat in ``data``; None when it cannot be read (then it proves nothing)."""
        try:
            body = json.loads(data)
            return cls(
                owner=str(body["owner"]),
                host=str(body["host"]),
                pid=int(body["pid"]),
                process_scope=str(body["process_scope"]),
                renewed_at=datetime.fromisoformat(body["renewed_at"]),
                lease_s=float(body["lease_s"]),
                ended=bool(body["ended"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


class OwnerHeartbeats:
    """One owner's own heartbeat (written), and other owners' (read, cached); thread-safe."""

    def __init__(self, store: ObjectStore, owner: str, lease: float) -> None:
        owner_path(owner)  # a valid owner id, or ValueError now
        self.store = store
        self.owner = owner
        self.lease = lease
        #: Other owners' heartbeats as last read: ``{owner: (beat or None, monotonic time)}``.
        self._read: dict[str, tuple[OwnerBeat | None, float]] = {}
        self._started = False
        self._start_lock = threading.Lock()

    def beat(self, *, ended: bool = False) -> None:
        """Renew this owner's heartbeat (one write): its claims stay live for a lease from now.
        ``ended``: the owner is done, and its claims are dead at once."""
        host, scope, pid = this_process()
        beat = OwnerBeat(self.owner, host, pid, scope, now_utc(), self.lease, ended=ended)
        self.store.write_atomic(owner_path(self.owner), beat.to_json())
        self._started = True

    def start(self) -> None:
        """Write the first heartbeat, before the first claim (once)."""
        if self._started:
            return
        with self._start_lock:
            if not self._started:
                self.beat()

    def of(self, owner: str) -> OwnerBeat | None:
        """``owner``'s heartbeat, read at most an eighth of a lease ago (so an owner that
        renews every quarter lease never looks dead); None if it has none (or an unreadable
        one, or an owner id from elsewhere)."""
        cached = self._read.get(owner)
        if cached is not None and time.monotonic() - cached[1] < self.lease / 8:
            return cached[0]
        try:
            data = self.store.read_many([owner_path(owner)]).get(owner_path(owner))
        except ValueError:
            return None
        beat = OwnerBeat.from_json(data) if data is not None else None
        self._read[owner] = (beat, time.monotonic())
        return beat

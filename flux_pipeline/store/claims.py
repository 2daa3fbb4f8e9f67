"""Exclusive, leased claims on request keys under ``_claims/{request_key}.json``: never pay twice.

Before a run submits a request key it claims it. The first claim is an exclusive create
(``O_EXCL``-style locally, ``If-None-Match: *`` on S3), so of many runs racing for a key exactly
one wins. A claim holds its owner (run id), host, pid, when it was acquired and last renewed
(UTC) and its lease; the holder renews it every ``lease / 4`` while its job is in flight.

Every owner also keeps one heartbeat, ``_claims/_owners/{owner}.json`` (host, pid, when it was
last renewed, its lease, whether the owner has ended), written before its first claim. Renewing
the heartbeat (:meth:`Claims.beat`, one write) keeps every claim of the owner live, so the cost
of keeping claims is one write per quarter lease per run, whatever the number of keys it holds;
:meth:`Claims.renew` still renews single claims. Ending the owner (:meth:`Claims.end`, one
write) frees all its claims at once.

A claim is *dead* when it was released, when both its own lease and its owner's heartbeat ran
out (``renewed_at + lease`` is past, by the reader's clock: keep hosts' clocks within a
fraction of the lease), when its owner has ended, or when it was made on this machine (same
host name, boot and pid namespace) by a pid that no longer exists. A dead
claim is taken over with a compare-and-swap on the version that was read (``If-Match: <ETag>``
on S3; a ``flock``-guarded compare-and-replace locally), so of many runs taking over the same
dead claim at once exactly one wins, and a holder that renews or releases never overwrites a
claim that was taken from it. Release leaves a ``released`` record (one small object per key,
like the ledger) instead of deleting, so no step ever needs a conditional delete.

A claim object that cannot be read (not JSON, fields missing, another key's) is held by nobody
known: it counts as live for a lease after it was last written (the object's modification time),
then as dead, and is taken over like any dead claim. A warning names it once per version.

On moto (the test S3 server) ``If-None-Match: *`` and ``If-Match`` on ``PutObject`` are
honoured (412 when they fail), but moto checks and writes in two steps without a lock, so its
exclusivity under truly simultaneous requests is not guaranteed the way AWS S3 guarantees it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Final, TypeVar

from flux_pipeline.store.layout import claim_path
from flux_pipeline.store.owner_heartbeats import OwnerHeartbeats, now_utc
from flux_pipeline.store.process_identity import process_gone, this_process
from flux_pipeline.store.storage import ObjectStore, StorageError, Tagged

#: Seconds a claim stays live without renewal (renewed every quarter of it).
DEFAULT_LEASE: Final = 120.0
#: Claims read or written at once by the ``*_many`` calls.
CONCURRENCY: Final = 16
#: Rounds of create / read / swap before a key that keeps changing under us is an error.
_ROUNDS: Final = 8
#: The owner an unreadable claim is taken to have.
UNREADABLE: Final = "(unreadable claim)"

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimInfo:
    """One claim record, as stored."""

    request_key: str
    owner: str
    host: str
    pid: int
    #: Where ``pid`` means something: the machine's boot id and pid namespace ("" if unknown).
    process_scope: str
    acquired_at: datetime
    renewed_at: datetime
    lease_s: float
    released: bool = False

    @property
    def expires_at(self) -> datetime:
        return self.renewed_at + timedelta(seconds=self.lease_s)

    def to_json(self) -> bytes:
        body: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        body["acquired_at"] = self.acquired_at.isoformat()
        body["renewed_at"] = self.renewed_at.isoformat()
        return json.dumps(body).encode()

    @classmethod
    def from_json(cls, request_key: str, data: bytes) -> ClaimInfo:
        try:
            body = json.loads(data)
            info = cls(
                request_key=body["request_key"],
                owner=str(body["owner"]),
                host=str(body["host"]),
                pid=int(body["pid"]),
                process_scope=str(body["process_scope"]),
                acquired_at=datetime.fromisoformat(body["acquired_at"]),
                renewed_at=datetime.fromisoformat(body["renewed_at"]),
                lease_s=float(body["lease_s"]),
                released=bool(body["released"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"unreadable claim {claim_path(request_key)}: {exc!r}") from exc
        if info.request_key != request_key:
            raise ValueError(f"claim {claim_path(request_key)} names {info.request_key}")
        return info


class Claims:
    """Claims of one owner (a run) in an :class:`ObjectStore`; safe to share between threads.

    ``owner`` must be unique to the run (its run id; default a fresh uuid): claims with the
    same owner are treated as the caller's own.

    One concern, a claim's life (create, take over, renew, release, read, judge live), kept in
    one class because every step is the same compare-and-swap on the same object and must agree
    on what "live" means. The owner's heartbeat is :class:`.OwnerHeartbeats`, the writer's
    identity :mod:`.process_identity`.
    """

    def __init__(
        self, store: ObjectStore, *, owner: str | None = None, lease: float = DEFAULT_LEASE
    ) -> None:
        if lease <= 0:
            raise ValueError(f"lease must be positive seconds, got {lease!r}")
        self.store = store
        self.owner = owner or uuid.uuid4().hex
        self.lease = float(lease)
        self.heartbeats = OwnerHeartbeats(store, self.owner, self.lease)

    @property
    def renew_every(self) -> float:
        """How often the holder should call :meth:`renew` (a quarter of the lease)."""
        return self.lease / 4

    def beat(self) -> None:
        """Renew this owner's heartbeat (one write): every claim it holds stays live for a
        lease from now."""
        self.heartbeats.beat()

    def end(self) -> None:
        """This owner is done: all its claims are dead for every reader (one write)."""
        self.heartbeats.beat(ended=True)

    def claim(self, request_key: str) -> bool:
        """Claim ``request_key``: True if this owner now holds it (also if it already did)."""
        return self._settle(request_key)[0].owner == self.owner

    def claim_many(
        self, request_keys: Iterable[str], created: set[str] | None = None
    ) -> tuple[set[str], dict[str, ClaimInfo]]:
        """Claim several keys concurrently: ``(keys now ours, {key: live claim of another})``.

        Every key is validated before any is claimed. ``created`` gets the keys claimed for the
        first time ever (no claim object existed: no run has attached or submitted them since
        claims were kept).
        """
        keys = list(dict.fromkeys(request_keys))
        for key in keys:
            claim_path(key)
        self.heartbeats.start()
        mine: set[str] = set()
        others: dict[str, ClaimInfo] = {}
        for key, (info, fresh) in zip(keys, self._each(self._settle, keys), strict=True):
            if info.owner == self.owner:
                mine.add(key)
            else:
                others[key] = info
            if fresh and created is not None:
                created.add(key)
        return mine, others

    def renew(self, request_keys: Iterable[str]) -> set[str]:
        """Push back the lease of each key still held; return the keys no longer held.

        A key is lost when it was released, or taken over after its lease ran out.
        """
        keys = list(dict.fromkeys(request_keys))
        now = now_utc()
        renewed = self._each(
            lambda k: self._swap_own(k, lambda i: replace(i, renewed_at=now)), keys
        )
        return {key for key, ok in zip(keys, renewed, strict=True) if not ok}

    def release(self, request_keys: Iterable[str]) -> None:
        """Give up each key still held (a claim of another owner is left alone)."""
        keys = list(dict.fromkeys(request_keys))
        now = now_utc()
        self._each(
            lambda k: self._swap_own(k, lambda i: replace(i, renewed_at=now, released=True)), keys
        )

    def holder(self, request_key: str) -> ClaimInfo | None:
        """The claim on ``request_key`` (live or dead: see :meth:`is_live`); None if unclaimed
        or released."""
        current = self.store.read_tagged(claim_path(request_key))
        if current is None:
            return None
        info = self._parse(request_key, current)
        return None if info.released else info

    def holders(self, request_keys: Iterable[str]) -> dict[str, ClaimInfo]:
        """The unreleased claims (live or dead) among ``request_keys``, read concurrently."""
        keys = list(dict.fromkeys(request_keys))
        found = zip(keys, self._each(self.holder, keys), strict=True)
        return {key: info for key, info in found if info is not None}

    def is_live(self, info: ClaimInfo) -> bool:
        """Whether ``info`` still holds its key: not released, its own lease or its owner's
        heartbeat running (the owner not ended), and not made on this machine by a process
        that has exited."""
        if info.released:
            return False
        if process_gone(info.host, info.process_scope, info.pid):
            return False
        beat = self.heartbeats.of(info.owner)
        if beat is not None and beat.ended:
            return False
        now = now_utc()
        heartbeat_live = beat is not None and now < beat.renewed_at + timedelta(
            seconds=beat.lease_s
        )
        return heartbeat_live or now < info.expires_at

    def lost(self, request_keys: Iterable[str]) -> set[str]:
        """The keys among ``request_keys`` this owner no longer holds (read concurrently)."""
        keys = list(dict.fromkeys(request_keys))
        held = self.holders(keys)
        return {k for k in keys if (h := held.get(k)) is None or h.owner != self.owner}

    def _settle(self, request_key: str) -> tuple[ClaimInfo, bool]:
        """Make this owner the holder if nobody live holds the key; return the holder, and
        whether this call created the first claim object of the key."""
        path = claim_path(request_key)
        for _ in range(_ROUNDS):
            now = now_utc()
            host, scope, pid = this_process()
            fresh = ClaimInfo(request_key, self.owner, host, pid, scope, now, now, self.lease)
            if self.store.create_exclusive(path, fresh.to_json()):
                return fresh, True
            current = self.store.read_tagged(path)
            if current is None:
                continue  # removed by hand since: create again
            found = self._parse(request_key, current)
            if found.owner == self.owner and not found.released:
                # Ours already (an earlier claim, or a create whose answer was lost): renew.
                fresh = replace(found, renewed_at=now, lease_s=self.lease)
            elif self.is_live(found):
                return found, False
            if self.store.replace_if(path, fresh.to_json(), current.tag):
                return fresh, False
        raise StorageError(f"the claim {self.store.uri(path)} kept changing; gave up")

    def _swap_own(self, request_key: str, change: Callable[[ClaimInfo], ClaimInfo]) -> bool:
        """Rewrite this owner's unreleased claim with ``change``; False if it is not ours."""
        path = claim_path(request_key)
        for _ in range(_ROUNDS):
            current = self.store.read_tagged(path)
            if current is None:
                return False
            found = self._parse(request_key, current)
            if found.owner != self.owner or found.released:
                return False
            if self.store.replace_if(path, change(found).to_json(), current.tag):
                return True
            # Changed since read: taken over, or this owner renewed it from another thread.
        raise StorageError(f"the claim {self.store.uri(path)} kept changing; gave up")

    def _parse(self, request_key: str, current: Tagged) -> ClaimInfo:
        """The claim in ``current``; an unreadable one is held by :data:`UNREADABLE` for a
        lease after it was written."""
        try:
            return ClaimInfo.from_json(request_key, current.data)
        except ValueError as exc:
            if (request_key, current.tag) not in _WARNED:
                _WARNED.add((request_key, current.tag))
                log.warning(
                    "%s; taken as held until a lease (%g s) after it was written (%s), then "
                    "taken over; delete %s to free the key at once",
                    exc,
                    self.lease,
                    current.modified.isoformat(),
                    self.store.uri(claim_path(request_key)),
                )
        written = current.modified
        return ClaimInfo(request_key, UNREADABLE, "", 0, "", written, written, self.lease)

    def _each(self, work: Callable[[str], T], keys: list[str]) -> list[T]:
        if len(keys) <= 1:
            return [work(k) for k in keys]
        with ThreadPoolExecutor(min(CONCURRENCY, len(keys))) as pool:
            return list(pool.map(work, keys))


#: Unreadable claim versions already warned about, as (request key, tag).
_WARNED: set[tuple[str, str]] = set()

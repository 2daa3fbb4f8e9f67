"""The claims one build holds (see :mod:`flux_pipeline.store.claims`): taken, renewed, released.

:class:`HeldClaims` keeps the request keys a build has claimed and not let go. It keeps them
live by renewing the build's one heartbeat every quarter of the lease
(:meth:`HeldClaims.renew_forever`: one write a pass, however many keys are held). A key whose
outcome is final in the ledger is let go without a write (:meth:`HeldClaims.forget`): readers
look at the ledger before the claims, so its claim blocks nobody, and it dies with the
heartbeat. A key let go without a final outcome is released (:meth:`HeldClaims.release`), so
another run may take it at once. When the build ends (:meth:`HeldClaims.end`) the heartbeat is
marked ended (one write), which frees every claim it still holds; its claims count as dead for
the other builds of this process even when that write fails (e.g. during a storage outage).

Each pass also reads back the claims of the keys next in line to be sent (``upcoming``, at most
one window's worth per queue), so a claim taken over while this run still queues its key (a
reader whose clock runs ahead, a claim freed by hand) is dropped and not sent. A pass that
renews the heartbeat later than three quarters of a lease after the previous one may have let
other runs see every claim as dead: all held claims are then read back. Renewal work is thus one
write and at most a window's reads a pass, whatever the length of the range.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from flux_pipeline.store.claims import ClaimInfo, Claims
from flux_pipeline.store.storage import ObjectStore, StorageError

__all__ = ["HeldClaims"]

#: The build's logger: claim warnings belong to the build's log (e.g. a Dagster run's).
log = logging.getLogger("flux_pipeline.builder")

#: Claim owners of the builds of this process that have ended (their claims are dead even
#: when a release could not be written, e.g. during a storage outage).
_ENDED_OWNERS: set[str] = set()


class _BuildClaims(Claims):
    """Claims that also count as dead when held by an ended build of this process."""

    def is_live(self, info: ClaimInfo) -> bool:
        return info.owner not in _ENDED_OWNERS and super().is_live(info)


class HeldClaims:
    """The request keys one build holds a claim on; use it on the build's event loop."""

    def __init__(
        self, store: ObjectStore, *, lease: float, upcoming: Callable[[], list[str]] = list
    ) -> None:
        self._claims = _BuildClaims(store, lease=lease)
        self._held: set[str] = set()
        #: The held keys next in line to be sent, read back at every pass.
        self._upcoming = upcoming

    @property
    def lease(self) -> float:
        return self._claims.lease

    @property
    def renew_every(self) -> float:
        return self._claims.renew_every

    def __contains__(self, request_key: object) -> bool:
        return request_key in self._held

    async def claim(
        self, request_keys: Iterable[str], created: set[str] | None = None
    ) -> tuple[set[str], dict[str, ClaimInfo]]:
        """Claim ``request_keys``: the keys now held, and the live claims of other runs;
        ``created`` gets the keys claimed for the first time ever (see ``Claims.claim_many``)."""
        mine, others = await asyncio.to_thread(self._claims.claim_many, request_keys, created)
        self._held |= mine
        return mine, others

    def forget(self, request_keys: Iterable[str]) -> None:
        """Let go of keys whose outcome is final in the ledger, writing nothing."""
        self._held.difference_update(request_keys)

    async def release(self, request_keys: list[str]) -> None:
        """Release claims, best effort: one left behind only delays other runs by its lease
        (and not at all on this machine once this process is gone)."""
        await asyncio.to_thread(self._release, request_keys)
        self._held.difference_update(request_keys)

    async def end(self) -> None:
        """The build has ended: its claims are dead in this process, and for everyone once the
        heartbeat says so (best effort: otherwise they lapse with its lease)."""
        _ENDED_OWNERS.add(self._claims.owner)
        try:
            await asyncio.to_thread(self._claims.end)
        except Exception as exc:  # s3fs/botocore raise more than OSError
            log.warning(
                "could not mark the claims of %d request key(s) ended (%s); they lapse with "
                "their lease",
                len(self._held),
                exc,
            )
        self._held.clear()

    def not_held_live(self, request_keys: list[str]) -> list[str]:
        """The keys no other live run holds (this run holds a waiting key only when a takeover
        failed half-way: it is free to send). Blocking: run it in a thread."""
        holders, live, owner = (
            self._claims.holders(request_keys),
            self._claims.is_live,
            self._claims.owner,
        )
        return [
            k
            for k in request_keys
            if (h := holders.get(k)) is None or h.owner == owner or not live(h)
        ]

    async def renew_forever(self) -> None:
        """Renew the heartbeat every quarter of the lease; a failed pass is logged and tried
        again sooner. Every held key was claimed or renewed since ``renewed`` (the start of the
        last pass that succeeded): once that is half a lease ago, raise StorageError."""
        renewed, delay = time.monotonic(), self.renew_every
        while True:
            await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                await asyncio.to_thread(self._claims.beat)
                late = started - renewed > self.lease * 3 / 4
                check = sorted(self._held) if late else self._upcoming()
                lost = await asyncio.to_thread(self._claims.lost, check) if check else set()
            except Exception as exc:  # s3fs/botocore raise more than OSError
                unrenewed = time.monotonic() - renewed
                if self._held and unrenewed > self.lease / 2:
                    raise StorageError(
                        f"could not renew the claims of {len(self._held)} request key(s) for "
                        f"{unrenewed:.0f} s, half their lease: stopping before another run "
                        f"takes them over ({exc})"
                    ) from exc
                log.warning("could not renew %d claim(s) (%s); trying again", len(self._held), exc)
                delay = self.renew_every / 4
                continue
            renewed, delay = started, self.renew_every
            lost &= self._held  # not the keys released while the pass ran
            if lost:
                log.warning(
                    "%d claim(s) were taken over by another run; those not sent yet are not "
                    "sent by this run",
                    len(lost),
                )
                self._held -= lost

    def _release(self, request_keys: list[str]) -> None:
        try:
            self._claims.release(request_keys)
        except Exception as exc:  # s3fs/botocore raise more than OSError
            log.warning(
                "could not release %d claim(s) (%s); they lapse with their lease",
                len(request_keys),
                exc,
            )

"""The claims one build holds (see :mod:`flux_pipeline.claims`): taken, renewed, released.

:class:`HeldClaims` keeps the request keys a build has claimed and not released, renews them
every quarter of the lease (:meth:`HeldClaims.renew_forever`) and releases them, best effort.
Once a build has ended (:meth:`HeldClaims.end`), its claims count as dead for the other builds
of this process even when their release could not be written (e.g. during a storage outage).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from flux_pipeline.claims import ClaimInfo, Claims
from flux_pipeline.storage import ObjectStore, StorageError

__all__ = ["HeldClaims"]

#: The build's logger: claim warnings belong to the build's log (e.g. a Dagster run's).
log = logging.getLogger("flux_pipeline.build")

#: Claim owners of the builds of this process that have ended (their claims are dead even
#: when a release could not be written, e.g. during a storage outage).
_ENDED_OWNERS: set[str] = set()


class _BuildClaims(Claims):
    """Claims that also count as dead when held by an ended build of this process."""

    def is_live(self, info: ClaimInfo) -> bool:
        return info.owner not in _ENDED_OWNERS and super().is_live(info)


class HeldClaims:
    """The request keys one build holds a claim on; use it on the build's event loop."""

    def __init__(self, store: ObjectStore, *, lease: float) -> None:
        self._claims = _BuildClaims(store, lease=lease)
        self._held: set[str] = set()

    @property
    def lease(self) -> float:
        return self._claims.lease

    @property
    def renew_every(self) -> float:
        return self._claims.renew_every

    def __contains__(self, request_key: object) -> bool:
        return request_key in self._held

    async def claim(self, request_keys: Iterable[str]) -> tuple[set[str], dict[str, ClaimInfo]]:
        """Claim ``request_keys``: the keys now held, and the live claims of other runs."""
        mine, others = await asyncio.to_thread(self._claims.claim_many, request_keys)
        self._held |= mine
        return mine, others

    async def release(self, request_keys: list[str]) -> None:
        """Release claims, best effort: one left behind only delays other runs by its lease
        (and not at all on this machine once this process is gone)."""
        await asyncio.to_thread(self._release, request_keys)
        self._held.difference_update(request_keys)

    async def end(self) -> None:
        """The build has ended: its claims are dead in this process; release them all."""
        _ENDED_OWNERS.add(self._claims.owner)
        await self.release(sorted(self._held))

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
        """Renew the held claims every quarter of the lease; a failed pass is logged and tried
        again sooner. Every held key was claimed or renewed since ``renewed`` (the start of the
        last pass that succeeded): once that is half a lease ago, raise StorageError."""
        renewed, delay = time.monotonic(), self.renew_every
        while True:
            await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                lost = await asyncio.to_thread(self._claims.renew, sorted(self._held))
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

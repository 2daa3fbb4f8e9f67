"""Leased slots of the Segmind account in the store: at most ``slots`` range builds use it at once.

The account's quota is shared by every run that talks to it, however it was launched (the run
queue, a shell's ``dagster asset materialize``, a retried run), so the share cannot rest on the
run queue alone. A build that is given an :class:`AccountSlot` holds one of ``slots`` claims
before its engine sends any request and until the build ends, and paces itself at
``requests_per_minute / slots``: however the runs overlap, their sum stays within the quota.

Slot ``i`` is the claim (:mod:`.claims`: exclusive create, renewed every quarter of
the lease, released at the end) on the key ``sha256("segmind-account-slot/{i}")``, i.e. the file
``_claims/{that key}.json``, owned by the run. A slot whose holder died (its lease ran out, or
its process is gone on this machine) is taken over, exactly like a request key's claim; a build
waiting for a slot looks again every second, then at intervals doubling up to a quarter of the
lease, and logs who holds them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from flux_pipeline.store.claims import DEFAULT_LEASE, Claims
from flux_pipeline.store.storage import ObjectStore, StorageError

__all__ = ["AccountSlot", "holding", "slot_key"]

T = TypeVar("T")
#: The build's logger: slot waits belong to the build's log (e.g. a Dagster run's).
log = logging.getLogger("flux_pipeline.builder")
#: Seconds before a waiting build looks at the slots again (then doubling).
FIRST_POLL: Final = 1.0


def slot_key(index: int) -> str:
    """The claim key of slot ``index``."""
    return hashlib.sha256(f"segmind-account-slot/{index}".encode()).hexdigest()


class AccountSlot:
    """One of ``slots`` leased slots of the account, for the build of run ``owner``."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        slots: int,
        owner: str | None,
        lease: float = DEFAULT_LEASE,
        say: Callable[[str], None] | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots!r}")
        self.slots = slots
        #: Also told the slot's news (who holds the slots while this build waits), e.g. a run log.
        self._say = say
        self._claims = Claims(store, owner=owner, lease=lease)
        self._keys = [slot_key(i) for i in range(slots)]

    @property
    def owner(self) -> str:
        return self._claims.owner

    async def hold(self, work: Callable[[], Awaitable[T]]) -> T:
        """Wait for a free slot, run ``work()`` while holding it (renewed), then release it.

        Raises StorageError if the slot is taken over, or goes unrenewed for half its lease,
        while ``work`` runs (another build may hold it by then)."""
        key = await self._acquire()
        renewing = asyncio.create_task(self._renew(key))
        try:
            job = asyncio.ensure_future(work())
            done, _ = await asyncio.wait({job, renewing}, return_when=asyncio.FIRST_COMPLETED)
            if renewing in done:
                job.cancel()
                await asyncio.gather(job, return_exceptions=True)
                renewing.result()
            return await job
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            await asyncio.to_thread(self._release, key)

    async def _acquire(self) -> str:
        delay, told = FIRST_POLL, ""
        while True:
            for key in self._keys:
                if await asyncio.to_thread(self._claims.claim, key):
                    self._tell(f"holding account slot {self._keys.index(key) + 1} of {self.slots}")
                    return key
            holders = await asyncio.to_thread(self._claims.holders, self._keys)
            who = ", ".join(sorted(f"run {h.owner} on {h.host}" for h in holders.values()))
            if who != told:
                self._tell(f"waiting for one of the {self.slots} account slot(s): held by {who}")
                told = who
            await asyncio.sleep(delay)
            delay = min(2 * delay, self._claims.renew_every)

    def _tell(self, message: str) -> None:
        log.info("%s", message)
        if self._say is not None:
            self._say(message)

    async def _renew(self, key: str) -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self._claims.renew_every)
            try:
                lost = await asyncio.to_thread(self._claims.renew, [key])
            except Exception as exc:  # s3fs/botocore raise more than OSError
                if time.monotonic() - renewed > self._claims.lease / 2:
                    raise StorageError(
                        f"could not renew the account slot for half its lease ({exc})"
                    ) from exc
                log.warning("could not renew the account slot (%s); trying again", exc)
                continue
            if lost:
                raise StorageError("the account slot was taken over by another run")
            renewed = time.monotonic()

    def _release(self, key: str) -> None:
        try:
            self._claims.release([key])
        except Exception as exc:  # s3fs/botocore raise more than OSError
            log.warning("could not release the account slot (%s); it lapses with its lease", exc)


async def holding(slot: AccountSlot | None, work: Callable[[], Awaitable[T]]) -> T:
    """``work()`` inside ``slot`` (see :meth:`AccountSlot.hold`), or as is without one."""
    return await (work() if slot is None else slot.hold(work))

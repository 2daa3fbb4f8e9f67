"""The budget guard: no accepted submit past ``max_new_images`` or ``max_cost``.

Each submit reserves its place before it is sent, so concurrent submits cannot overshoot;
an answer that bills nothing (429, 5xx, 400, ...) gives the reservation back, an accepted
one keeps it. While the budget is fully reserved, a submit waits for the pending ones to
be decided rather than being refused for a reservation that may come back. What the guard
counts (accepted submits, their cost, the first refusal's reason) is kept in
:class:`EngineStats` as it changes.
"""

from __future__ import annotations

import asyncio

from flux_pipeline.segmind.stats import EngineStats


class SpendingGuard:
    """Reservations and spending of one engine against its budget (None: unlimited)."""

    def __init__(
        self,
        max_new_images: int | None,
        max_cost: float | None,
        price_per_image: float | None,
        stats: EngineStats,
    ) -> None:
        self.max_new_images = max_new_images
        self.max_cost = max_cost
        self.price_per_image = price_per_image
        #: Submits on their way (reserved, not yet decided) and accepted (billed) ones.
        self.pending = 0
        self.accepted = 0
        #: Costs the service reported, and accepted jobs whose cost is not reported yet.
        self.reported_cost = 0.0
        self.reported = 0
        self.unreported = 0
        self._stats = stats
        self._changed = asyncio.Condition()

    @property
    def limited(self) -> bool:
        return self.max_new_images is not None or self.max_cost is not None

    def unit_cost(self) -> float:
        """Expected cost of one image: the mean reported so far, else ``price_per_image``."""
        if self.reported:
            return self.reported_cost / self.reported
        return self.price_per_image or 0.0  # EngineConfig requires a price with max_cost

    def spent(self) -> float:
        """Reported costs plus the expected cost of accepted jobs not reported yet."""
        return self.reported_cost + self.unreported * self.unit_cost()

    async def reserve(self) -> str | None:
        """Reserve one submit; returns None to go ahead, or why the budget refuses it.

        The reason names the limit (``budget max_new_images=5 reached``); the first one is
        kept as ``stats.budget_reason``.
        """
        if not self.limited:
            return None
        async with self._changed:
            while True:
                refusal = self._refusal()
                if refusal is None:
                    self.pending += 1
                    return None
                if not self.pending:  # nothing on its way could free a place
                    self._stats.budget_reason = self._stats.budget_reason or refusal
                    return refusal
                await self._changed.wait()

    def _refusal(self) -> str | None:
        if self.max_new_images is not None and self.accepted + self.pending >= self.max_new_images:
            return f"budget max_new_images={self.max_new_images} reached"
        if self.max_cost is not None:
            unit = self.unit_cost()
            committed = self.spent() + self.pending * unit
            if committed + unit > self.max_cost:
                return (
                    f"budget max_cost={self.max_cost:g} reached (spent about {committed:g} at "
                    f"{unit:g} per image)"
                )
        return None

    async def settle(self, *, billed: bool, cost: float | None = None) -> None:
        """Decide a reservation: ``billed`` (accepted, or maybe billed) or given back.

        ``cost``: the cost the answer reported (a v1 POST's ``x-cost``); None: not known yet.
        """
        if not self.limited:
            self._count(billed, cost)
            return
        async with self._changed:
            self.pending -= 1
            self._count(billed, cost)
            self._changed.notify_all()

    def _count(self, billed: bool, cost: float | None) -> None:
        if not billed:
            return
        self.accepted += 1
        if cost is None:
            self.unreported += 1
        else:
            self.reported += 1
            self.reported_cost += cost
        self._publish()

    def _publish(self) -> None:
        self._stats.budget_spent_images = self.accepted
        self._stats.budget_spent_cost = self.spent()

    async def report(self, cost: float | None) -> None:
        """An accepted job's result reported its cost (or reported none: keep the estimate)."""
        if cost is None or not self.unreported:
            return
        async with self._changed:
            self.unreported -= 1
            self.reported += 1
            self.reported_cost += cost
            self._publish()
            self._changed.notify_all()

"""Client-side flow control: a request pacer and an adaptive in-flight window.

The pacer is a GCRA ("virtual scheduling") token bucket of a few lines rather than
``aiolimiter``: aiolimiter lets a full bucket through at once at start, which is the
429 storm we want to avoid, and its bucket would have to be sized to one request to
prevent it; strict spacing with a small tolerance is simpler to state and to test.
"""

from __future__ import annotations

import asyncio
import time


class RequestPacer:
    """Spaces requests ``1/rate`` seconds apart, FIFO, with a burst of at most ``burst``."""

    def __init__(self, rate: float, *, burst: int = 1) -> None:
        if rate <= 0:
            raise ValueError(f"max_requests_per_second must be > 0, got {rate}")
        self._interval = 1.0 / rate
        self._tolerance = self._interval * (max(1, burst) - 1)
        self._next_free = 0.0  # theoretical arrival time of the next request

    async def wait(self) -> None:
        """Return when one more request may be sent."""
        now = time.monotonic()
        slot = max(now, self._next_free - self._tolerance)
        self._next_free = max(self._next_free, now) + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


class AdaptiveWindow:
    """How many jobs may be in flight: halved on a 429, grown back by successes (AIMD).

    Only admission of *new* jobs waits on the window; jobs already in flight keep going.
    """

    def __init__(self, maximum: int, *, growth: float = 0.25) -> None:
        if maximum < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {maximum}")
        self.maximum = maximum
        self.limit = float(maximum)
        self.in_use = 0
        self._growth = growth
        self._quiet_until = 0.0
        self._changed = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_use < int(self.limit))
            self.in_use += 1

    async def release(self) -> None:
        async with self._changed:
            self.in_use -= 1
            self._changed.notify_all()

    def rate_limited(self, pause: float) -> None:
        """Halve the window, once per ``pause`` (the 429s of one burst count once)."""
        now = time.monotonic()
        if now >= self._quiet_until:
            self.limit = max(1.0, self.limit / 2)
            self._quiet_until = now + max(pause, 1.0)

    async def succeeded(self) -> None:
        async with self._changed:
            self.limit = min(float(self.maximum), self.limit + self._growth)
            self._changed.notify_all()

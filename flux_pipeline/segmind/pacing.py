"""Client-side flow control: a request pacer and an adaptive in-flight window.

The pacer is a GCRA ("virtual scheduling") of a few lines rather than ``aiolimiter``:
aiolimiter lets a full bucket through at once at start, which is the 429 storm we want to
avoid; strict spacing is simpler to state and to test.
"""

from __future__ import annotations

import asyncio
import time

from flux_pipeline.segmind.stats import EngineStats

#: A configured quota is paced this much below its nominal rate, so that the jitter of
#: answers and clocks never pushes one request over the edge of the service's sliding window.
QUOTA_MARGIN = 0.97
#: The learned pace never drops below one request per this many seconds.
_SLOWEST = 1 / 60
#: A learned pace is kept this much below the estimate, then grows back by this share per
#: second (additive increase: slowly, as a sliding one-minute quota punishes overshoot late).
_BELOW = 0.9
_RECOVERY = 0.01


class RequestPacer:
    """Paces API requests: the account's quota, a pace learned from 429s, and their holds.

    - ``per_minute`` (``requests_per_minute``): strict spacing at 97 % of it, no burst;
      None: no fixed cap.
    - a 429 holds every request until the time it names (``Retry-After`` or
      ``x-rate-limit-reset-at-utc``) and sets the learned pace, once per burst of 429s: we
      sent ``n`` requests (429s aside) in the ``d`` seconds since the previous burst and the
      quota then asked for ``w`` more, so it sustains about ``n / (d + w)`` per second; the pace is
      set a little below that (never above what was being sent, never below half of it:
      multiplicative decrease), then grows back slowly
      with every answer that is not a 429, until the fixed cap (if any) is reached again.
    """

    def __init__(self, per_minute: float | None, stats: EngineStats) -> None:
        if per_minute is not None and not per_minute > 0:
            raise ValueError(f"requests_per_minute: must be > 0, got {per_minute}")
        self.quota = None if per_minute is None else per_minute / 60 * QUOTA_MARGIN
        #: Pace learned from 429s (requests/s); None until the first one.
        self.learned: float | None = None
        self._next_free = 0.0  # theoretical send time of the next request
        self._last_slot: float | None = None  # that of the last request let through at a pace
        self._hold_until = 0.0
        self._quiet_until = 0.0
        #: Since when requests are counted (the end of the last hold), requests sent before
        #: then, and 429s since then.
        self._since: float | None = None
        self._sent_before = 0
        self._refused = 0
        #: Bursts of 429s seen (the 429s within one hold count once).
        self.bursts = 0
        self._stats = stats

    @property
    def sent(self) -> int:
        """API requests let through so far."""
        return self._stats.paced

    @property
    def delayed(self) -> int:
        """Those of them that waited for the pace or a hold."""
        return self._stats.pace_waits

    @property
    def rate(self) -> float | None:
        """Requests per second allowed now; None when nothing caps them."""
        caps = [cap for cap in (self.quota, self.learned) if cap is not None]
        return min(caps) if caps else None

    async def wait(self) -> None:
        """Return when one more API request may be sent."""
        delayed = False
        slot: float | None = None
        while True:
            now = time.monotonic()
            if now < self._hold_until:
                delayed = True
                await asyncio.sleep(self._hold_until - now)
                continue
            rate = self.rate
            if rate is None:
                slot = None
                break
            slot = max(now, self._next_free)
            self._next_free = slot + 1 / rate
            if slot <= now:
                break
            delayed = True
            await asyncio.sleep(slot - now)
            if time.monotonic() >= self._hold_until:
                break  # else a 429 arrived meanwhile: wait for its hold, then take a new slot
        if slot is not None and self._last_slot is not None:
            gap = slot - self._last_slot
            if self._stats.pace_gap is None or gap < self._stats.pace_gap:
                self._stats.pace_gap = gap
        self._last_slot = slot if slot is not None else self._last_slot
        self._stats.paced += 1
        self._stats.pace_waits += delayed
        if self._since is None:
            self._since = time.monotonic()

    def rate_limited(self, wait: float) -> None:
        """A 429 asking to wait ``wait`` seconds: hold everything; learn the pace once."""
        now = time.monotonic()
        self._refused += 1
        if now >= self._quiet_until:  # the first 429 of a burst decides; the others only hold
            self.bursts += 1
            self._quiet_until = now + max(wait, 1.0)
            span = max(0.1, now - (self._since or now))
            through = max(1, self.sent - self._sent_before - self._refused)
            sustained = through / (span + max(wait, 0.0))
            sending = through / span
            if self.rate is not None:
                sending = min(sending, self.rate)
            estimate = _BELOW * min(sustained, sending)
            # At most halved per burst: an estimate from a short span after a hold is noisy.
            self.learned = max(_SLOWEST, estimate, sending / 2)
            self._since, self._sent_before, self._refused = now + wait, self.sent, 0
        self._hold_until = max(self._hold_until, now + wait)
        # Slots already handed out past the hold keep their place: new ones follow them.
        self._next_free = max(self._next_free, self._hold_until)

    def answered(self) -> None:
        """An API answer that was not a 429: let a learned pace grow back a little."""
        if self.learned is None:
            return
        # + RECOVERY x learned per second, spread over the learned requests of one second
        self.learned += _RECOVERY
        if self.quota is not None and self.learned >= self.quota:
            self.learned = None


class AdaptiveWindow:
    """How many jobs may be in flight: halved on a 429, grown back by successes (AIMD).

    Only admission of *new* jobs waits on the window; jobs already in flight keep going.
    """

    def __init__(self, maximum: int, *, growth: float = 0.25) -> None:
        if maximum < 1:
            raise ValueError(f"max_concurrency: must be >= 1, got {maximum}")
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

"""Per-key limits and injected faults: rate limit (429), credits (406), gateway errors (5xx),
slow answers. The per-minute account quota lives in :mod:`flux_pipeline.emulator.quota`."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass

#: Statuses (and their bodies) served by ``--fault-rate``.
FAULTS: dict[int, str] = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    504: "Gateway Timeout",
}


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per account: ``rate`` requests/s with a burst of one second's worth.

    Same interface as :class:`~flux_pipeline.emulator.quota.SlidingWindowQuota`, so a request
    is admitted only when every limit allows it and is then recorded by all of them.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._buckets: dict[str, _Bucket] = {}

    def wait(self, account: str, now: float) -> float:
        """Seconds until a token is available; 0 when one is now."""
        bucket = self._buckets.setdefault(account, _Bucket(self.capacity, now))
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self.rate

    def record(self, account: str, now: float) -> None:
        """Take the token of an admitted request (call only after :meth:`wait` answered 0)."""
        self._buckets[account].tokens -= 1.0


class CreditLedger:
    """Credit balance per account; ``budget=None`` never runs out."""

    def __init__(self, budget: float | None, unlimited_balance: float) -> None:
        self.budget = budget
        self._start = unlimited_balance if budget is None else budget
        self._spent: defaultdict[str, float] = defaultdict(float)

    def balance(self, account: str) -> float:
        return self._start - self._spent[account]

    def charge(self, account: str, cost: float) -> bool:
        """Spend ``cost``; False (nothing spent) when a budgeted balance cannot cover it."""
        if self.budget is not None and self.balance(account) < cost:
            return False
        self._spent[account] += cost
        return True

    def refund(self, account: str, cost: float) -> None:
        self._spent[account] -= cost


def draw(seed: int, *request: object) -> random.Random:
    """A generator that depends only on ``seed`` and what identifies the request."""
    return random.Random("\x00".join(map(str, (seed, *request))))


class Occurrences:
    """Numbers the repeats of the same request (endpoint kind plus what it is about)."""

    def __init__(self) -> None:
        self._seen: Counter[tuple[str, str]] = Counter()

    def next(self, kind: str, identity: str) -> int:
        occurrence = self._seen[kind, identity]
        self._seen[kind, identity] += 1
        return occurrence


class FaultInjector:
    """Decides which requests fail, reproducibly from the seed.

    The decision for the n-th occurrence of the same request (endpoint kind plus what it is
    about: the request key of a submit or of a polled job) depends only on ``seed``, so a
    workload replays the same faults however its requests interleave.
    """

    def __init__(self, rate: float, seed: int) -> None:
        self.rate = rate
        self.seed = seed
        self._occurrences = Occurrences()

    def fault(self, kind: str, identity: str) -> int | None:
        """The status to answer instead of serving the request, or None to serve it."""
        if self.rate <= 0.0:
            return None
        rng = draw(self.seed, kind, identity, self._occurrences.next(kind, identity))
        if rng.random() >= self.rate:
            return None
        return rng.choice(sorted(FAULTS))


class LatencyInjector:
    """Decides how late each answer is sent: uniformly 0..``latency`` seconds.

    Reproducible like :class:`FaultInjector`: the delay of the n-th occurrence of the same
    request depends only on ``seed``, drawn apart from its fault draw (which latency leaves
    unchanged).
    """

    def __init__(self, latency: float, seed: int) -> None:
        self.latency = latency
        self.seed = seed
        self._occurrences = Occurrences()

    def delay(self, kind: str, identity: str) -> float:
        """Seconds to hold this request's answer back."""
        if self.latency <= 0.0:
            return 0.0
        occurrence = self._occurrences.next(kind, identity)
        return draw(self.seed, "latency", kind, identity, occurrence).uniform(0.0, self.latency)

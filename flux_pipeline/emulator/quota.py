"""The account quota: at most ``limit`` API requests per key in any sliding window (a minute)."""

from __future__ import annotations

from collections import deque
from typing import Literal

QuotaCounts = Literal["all", "submits"]

#: Request kinds the quota counts (and may refuse) in each ``quota_counts`` mode.
COUNTED_KINDS: dict[QuotaCounts, frozenset[str]] = {
    "all": frozenset({"submit", "status", "result", "sync"}),
    "submits": frozenset({"submit", "sync"}),
}


class SlidingWindowQuota:
    """At most ``limit`` admitted requests per account in the last ``window`` seconds.

    Only admitted requests are recorded: a refused one does not count toward the window, as with
    real quotas, so a client hammering a spent quota is let in again as soon as its oldest
    admitted request leaves the window. Memory per account is bounded by ``limit``.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._admitted: dict[str, deque[float]] = {}

    def wait(self, account: str, now: float) -> float:
        """Seconds until the account may send one more request; 0 when it may now."""
        admitted = self._admitted.setdefault(account, deque())
        while admitted and admitted[0] <= now - self.window:
            admitted.popleft()
        if len(admitted) < self.limit:
            return 0.0
        return admitted[0] + self.window - now

    def record(self, account: str, now: float) -> None:
        """Count an admitted request (call only after :meth:`wait` answered 0)."""
        self._admitted.setdefault(account, deque()).append(now)

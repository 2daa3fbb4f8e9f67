"""How long to wait before asking again: the server's hint, else exponential full jitter."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

#: Answers worth asking again: rate limited, or a transient server fault.
RETRY_STATUSES = frozenset({429, 500, 502, 504})


def backoff_delay(failures: int, base: float, ceiling: float, hint: float | None) -> float:
    """Full jitter up to ``base * 2**(failures - 1)`` (at most ``ceiling``), never less than
    the server asked (a hint of 0 s or a reset time in the past by clock skew must not turn
    into an immediate retry)."""
    cap = min(ceiling, base * 2 ** (failures - 1))
    return max(hint or 0.0, random.uniform(0, cap))


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait (``Retry-After`` or ``x-rate-limit-reset-at-utc``)."""
    waits = [
        wait
        for wait in (
            _seconds_until(response.headers.get("retry-after"), relative=True),
            _seconds_until(response.headers.get("x-rate-limit-reset-at-utc"), relative=False),
        )
        if wait is not None
    ]
    return max(0.0, *waits) if waits else None


def _seconds_until(value: str | None, *, relative: bool) -> float | None:
    """A header as seconds from now: delta seconds, epoch (s or ms), HTTP date or ISO 8601."""
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        if relative:
            return number
        return (number / 1000 if number > 1e11 else number) - time.time()
    for parse in (parsedate_to_datetime, datetime.fromisoformat):
        try:
            at = parse(value.replace("Z", "+00:00") if parse is datetime.fromisoformat else value)
        except (TypeError, ValueError):
            continue
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        return (at - datetime.now(UTC)).total_seconds()
    return None

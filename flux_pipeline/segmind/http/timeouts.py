"""One image's attempts against its deadline, and the timeouts of its next request."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from flux_pipeline.segmind.http.exceptions import StepFailed

#: Seconds to wait for a connection (at most: never more than the request's own timeout).
CONNECT: Final = 10.0


@dataclass
class Attempts:
    """One image's requests so far: how many, the last one's time, what a submit may have
    billed, and the time left until the image's deadline."""

    deadline_at: float
    count: int = 0
    #: UTC time the latest request was sent (for a submit: the accepted one).
    sent_at: datetime | None = None
    #: A POST was sent and no answer has ruled its job out yet: the job may exist (and be
    #: billed) while its id is not recorded. The engine clears it once the id is recorded.
    unrecorded_submit: bool = False
    #: A POST of this image was sent and its answer never arrived (it may be billed).
    maybe_billed: bool = False
    #: The next request already has its place from the pacer (taken by the caller).
    paced: bool = False
    #: Awaited before a POST answered 500/502/504 is sent again (the job may exist anyway):
    #: it raises to stop the retry when the job is found (see ``segmind/ambiguous.py``).
    on_submit_fault: Callable[[], Awaitable[None]] | None = None

    def remaining(self) -> float:
        return self.deadline_at - time.monotonic()


def read_timeout(
    kind: str, method: str, attempts: Attempts, request_timeout: float, deadline: float
) -> float:
    """Read timeout of the next request; raises once a POST could only go out too late.

    A POST's answer is never cut short (a submit timed out after sending may be billed with
    its id lost), and none is sent past the deadline; a GET is safe to cut short.
    """
    remaining = attempts.remaining()
    if method != "POST":
        return min(request_timeout, max(remaining, 0.1))
    if remaining <= 0:
        raise StepFailed(
            f"{kind}: deadline of {deadline:g} s reached before the request was sent (nothing "
            "submitted, nothing billed)",
            retryable=True,
            timed_out=True,
        )
    return request_timeout


def request_timeouts(read: float) -> dict[str, float]:
    """httpx's timeout extension of a request: ``read`` for each phase, connect capped."""
    return {"read": read, "write": read, "pool": read, "connect": min(read, CONNECT)}

"""How one step of one image fails, and which transport errors say what about a submit."""

from __future__ import annotations

import httpx


class StepFailed(Exception):
    """One step of one image could not be done; becomes a FAILED result."""

    def __init__(
        self, error: str, *, retryable: bool, timed_out: bool = False, maybe_billed: bool = False
    ) -> None:
        super().__init__(error)
        self.error = error
        self.retryable = retryable
        self.timed_out = timed_out
        #: A submit was sent and its answer never arrived: the job may exist and be billed.
        self.maybe_billed = maybe_billed


class AnswerTooLarge(StepFailed):
    """A 200 answer's body was larger than its cap: reading stopped there."""


#: Transport errors raised before the request reached the server: a submit is safe to resend.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteError)
#: Errors raised by our own side before anything was sent, the same on every attempt
#: (a header value h11 refuses, a URL scheme httpx cannot speak): never retried.
REFUSED_LOCALLY = (httpx.LocalProtocolError, httpx.UnsupportedProtocol)

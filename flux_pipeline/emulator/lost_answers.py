"""Answers lost after a submit was accepted (``--drop-submit-answers``, ``--accept-then-502``):
the job runs, is recorded and billed, and the client cannot tell from the answer.

Which submits lose their answer is drawn from the seed, the endpoint, the request key and how
many times that key was submitted, so a workload replays the same losses however it interleaves.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

from starlette.requests import Request

from flux_pipeline.emulator.limits import Occurrences, draw
from flux_pipeline.emulator.settings import EmulatorSettings

Loss = Literal["drop", "502"]
#: Longest a dropped answer is held when the client never gives up.
HOLD_AT_MOST = 600.0


class LostAnswers:
    """Decides which accepted submits lose their answer, and how."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.drop_rate = settings.drop_submit_answers
        self.bad_gateway_rate = settings.accept_then_502
        self.seed = settings.seed
        self._occurrences = Occurrences()
        self.dropped = 0
        self.bad_gateway = 0

    def pick(self, kind: str, request_key: str) -> Loss | None:
        """How the answer to this accepted submit is lost, or None when it is sent."""
        if not self.drop_rate and not self.bad_gateway_rate:
            return None
        occurrence = self._occurrences.next(kind, request_key)
        roll = draw(self.seed, "lost-answer", kind, request_key, occurrence).random()
        if roll < self.drop_rate:
            self.dropped += 1
            return "drop"
        if roll < self.drop_rate + self.bad_gateway_rate:
            self.bad_gateway += 1
            return "502"
        return None


async def hold_until_gone(request: Request) -> None:
    """Send nothing until the client closes the connection (its read timeout), or
    :data:`HOLD_AT_MOST` seconds."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(disconnected(), HOLD_AT_MOST)

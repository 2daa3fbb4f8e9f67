"""Submits whose fate is unknown, resolved from the account's record instead of guessed.

- No answer (a read timeout or a reset after sending, or a crash of an earlier run between
  send and answer): the record is searched for a request with the same inputs near the send
  time. Found: adopted (its id recorded first, then followed). Not found: looked for again
  until ``history_grace`` seconds after the send (the record may lag), then deemed never made.
- A 500, 502 or 504 answer: one immediate look before the transport retries; found: adopted.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime

from flux_pipeline.segmind.history import Adopted, RecordedRequest
from flux_pipeline.segmind.http.exceptions import StepFailed
from flux_pipeline.segmind.session import Job, Session

#: Longest wait between two looks for an unanswered submit.
_LOOK_EVERY = 5.0


def look_on_fault(session: Session, job: Job) -> None:
    """Make a 500/502/504 answer to ``job``'s submit look in the record once before a retry."""

    async def look() -> None:
        sent_at = job.attempts.sent_at or datetime.now(UTC)
        row = await session.record.find(job.request, sent_at)
        if row is not None:
            raise Adopted(row)

    job.attempts.on_submit_fault = look


async def resolve(session: Session, job: Job, sent_at: datetime) -> RecordedRequest | None:
    """The request ``job``'s submit sent at ``sent_at`` made, or None once ``history_grace``
    seconds after ``sent_at`` have passed without the record showing one."""
    grace = session.history_grace
    while True:
        try:
            row = await session.record.find(job.request, sent_at)
        except StepFailed as exc:
            raise StepFailed(
                "the submit was sent but its answer never arrived, and the account's record "
                f"could not be read ({exc.error}): the job may exist and be billed, so it is "
                "not re-POSTed",
                retryable=True,
            ) from None
        if row is not None:
            return row
        left = grace - (datetime.now(UTC) - sent_at).total_seconds()
        if left <= 0:
            return None
        await asyncio.sleep(min(left, max(grace / 4, 0.05), _LOOK_EVERY))


async def adopt(session: Session, job: Job, row: RecordedRequest) -> None:
    """Make ``row`` ``job``'s request: its id recorded (the ``on_submitted`` hook) first."""
    job.request_id, job.recovered = row.request_id, True
    job.submitted_at = job.submitted_at or job.attempts.sent_at or row.created_at
    session.stats.adopted += 1
    if session.on_submitted is not None:
        hook = functools.partial(session.on_submitted, job.request.request_key, row.request_id)
        await asyncio.get_running_loop().run_in_executor(session.hooks, hook)

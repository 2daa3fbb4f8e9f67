"""A request id whose result the service no longer keeps (404 after its retention), or that
was adopted from the account's record: its outcome read from the record instead.

COMPLETED: ``generation_url`` is downloaded and checked like any output (the byte cap and a
full decode); FAILED: a FAILED result with the record's error; PENDING: asked again at the
poll pace; absent: None, for the caller to submit again.
"""

from __future__ import annotations

from flux_pipeline.segmind.history import RecordedRequest
from flux_pipeline.segmind.http.exceptions import StepFailed
from flux_pipeline.segmind.output import image_of_output
from flux_pipeline.segmind.results import GenerationResult
from flux_pipeline.segmind.session import Job, Refetch, Session
from flux_pipeline.segmind.v2 import wait_before_poll

#: Times a recorded image is downloaded again after a body that is not a whole image.
_MAX_REFETCHES = 3


async def from_record(
    session: Session, job: Job, request_id: str, known: RecordedRequest | None = None
) -> GenerationResult | None:
    """The outcome of ``request_id`` as the account's record tells it; None when the record
    has no such request (``known``, a row already read, stands in while ``get`` lags)."""
    row = await session.record.get(request_id) or known
    misses = 0
    while row is not None and not (row.completed or row.failed):
        misses += 1
        await wait_before_poll(session, job, session.next_poll(job, misses, queued=False))
        row = await session.record.get(request_id) or row
    if row is None:
        return None
    job.request_id, job.recovered = request_id, True
    session.stats.recovered += 1
    if row.failed:
        return session.failed(
            job, row.error or "FAILED (per the account's record)", retryable=False
        )
    if not row.generation_url:
        raise StepFailed(
            f"record: request {request_id} is COMPLETED without a generation_url", retryable=True
        )
    refetches = 0
    while True:
        try:
            image = await image_of_output(session, job, row.generation_url)
        except Refetch as exc:
            refetches += 1
            if refetches > _MAX_REFETCHES:
                raise StepFailed(
                    f"{exc.error} (the recorded image was downloaded {refetches} times)",
                    retryable=True,
                ) from None
            continue
        return await session.success(
            job, image, inference_time=None, queue_time=None, cost=row.cost
        )

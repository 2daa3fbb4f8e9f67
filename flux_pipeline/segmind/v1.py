"""v1: one POST per image that answers the image itself (bytes, or JSON base64)."""

from __future__ import annotations

import httpx

from flux_pipeline.segmind.output import check, inline_image
from flux_pipeline.segmind.session import (
    FINAL_REFUSALS,
    Job,
    Run,
    Session,
    error_of,
    json_body,
    number,
)

#: Answers of a v1 POST that mean "no sync endpoint here": v2 for the rest of the run.
_NO_SYNC = frozenset({404, 405})
#: What :func:`run_sync` returns when the service has no v1 endpoint.
NO_SYNC_HERE = object()


async def run_sync(session: Session, job: Job, run: Run) -> object:
    """The job's result through one v1 POST.

    Returns the result, None once submitting has stopped, or :data:`NO_SYNC_HERE` when the
    service has no v1 endpoint (404/405): then v2 serves every later image of the run.
    """
    answer = await session.post(job, run, "sync", "v1")
    if answer is None:
        return None
    stats = session.stats
    with answer:
        response = answer.response
        if response.status_code in _NO_SYNC:
            _no_sync(session, response)
            return NO_SYNC_HERE
        job.request_id = response.headers.get("x-request-id")
        job.submitted_at = job.attempts.sent_at
        if response.status_code != 200:
            retryable = response.status_code not in FINAL_REFUSALS
            error = error_of(session.http, response, json_body(response))
            return session.failed(job, error, retryable=retryable)
        stats.submitted += 1
        headers = response.headers
        if headers.get("x-remaining-credits") is not None:
            stats.remaining_credits = number(headers["x-remaining-credits"])
        if answer.body is None:
            body = json_body(response)
            inline = inline_image(session, job, str(body.get("image") or body.get("output")))
            image = await check(session, job, "sync", inline)
        else:
            image = await check(session, job, "sync", answer.body)
    return await session.success(
        job,
        image,
        inference_time=number(headers.get("x-generation-time")),
        queue_time=None,
        cost=number(headers.get("x-cost")),
    )


def _no_sync(session: Session, response: httpx.Response) -> None:
    """The v1 endpoint is missing: v2 for the rest of the run, said once."""
    session.stats.sync_unavailable = True
    session.modes.sync_unavailable()
    session.warn_once(
        "no-sync",
        "the sync endpoint (v1) of model %r answered HTTP %d at %s: this service has none; "
        "every image of this run goes through v2",
        session.config.model,
        response.status_code,
        session.http.base,
    )

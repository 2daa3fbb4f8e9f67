"""v2: submit a job, record its id, follow it (status and result polls) to its result."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
from typing import Any

import httpx

from flux_pipeline.protocol import COMPLETED, FAILED, PROCESSING, QUEUED
from flux_pipeline.segmind.errors import ModelNotFound
from flux_pipeline.segmind.http.exceptions import AnswerTooLarge, StepFailed
from flux_pipeline.segmind.output import bad_media, image_of_output
from flux_pipeline.segmind.results import GenerationResult
from flux_pipeline.segmind.session import (
    FINAL_REFUSALS,
    Job,
    Refetch,
    Run,
    Session,
    error_of,
    json_body,
    number,
)

log = logging.getLogger("flux_pipeline.segmind")

#: What :func:`follow` returns when the service no longer knows the request id (404).
EXPIRED = object()
#: Times a result is asked again after its output was refused with a 4xx (an expired signed
#: URL) or was not a whole image (truncated, undecodable, over ``max_image_bytes``).
_MAX_REFETCHES = 3
#: Times a result that says COMPLETED without an ``output`` is asked again before giving up.
_MAX_EMPTY_RESULTS = 3


class _Ask(enum.Enum):
    """Which URL the next poll of a job asks, and why."""

    #: The result URL while the job is only believed done (the estimator's first poll): an
    #: answer there that is not progress nor an output sends us to the status URL.
    EARLY_RESULT = "result"
    #: The documented status URL.
    STATUS = "status"
    #: The result URL once the status said COMPLETED: a 404 there is final.
    RESULT = "result, confirmed"


def attach(session: Session, job: Job, request_id: str) -> None:
    """Make ``job`` follow ``request_id``, a job submitted by an earlier run."""
    base = session.http.base
    job.request_id = request_id
    job.status_url = f"{base}/v2/requests/{request_id}/status"
    job.response_url = f"{base}/v2/requests/{request_id}"


async def submit(session: Session, job: Job, run: Run) -> bool:
    """POST the job and record its id; False when submitting has stopped.

    A submit already sent when the run is cancelled (another job's auth error, a failed
    write, a cancelled Dagster run) is seen through, for up to ``request_timeout``, so
    that its id reaches the ``on_submitted`` hook rather than being lost with a paid job.
    """
    attempt = asyncio.ensure_future(_submit_and_record(session, job, run))
    try:
        return await asyncio.shield(attempt)
    except asyncio.CancelledError:
        if job.attempts.unrecorded_submit:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(attempt, session.config.request_timeout)
        else:
            attempt.cancel()
        raise


async def _submit_and_record(session: Session, job: Job, run: Run) -> bool:
    answer = await session.post(job, run, "submit", "v2")
    if answer is None:
        return False
    response, http = answer.response, session.http
    if response.status_code != 200:
        _refuse_model(session, response)
        raise StepFailed(
            f"submit: HTTP {response.status_code}: {http.error_text(response)}",
            retryable=response.status_code not in FINAL_REFUSALS,
        )
    body = json_body(response)
    request_id = str(body.get("request_id") or "")
    if not request_id:
        raise StepFailed("submit: answer without request_id", retryable=True)
    job.request_id = request_id
    job.submitted_at = job.attempts.sent_at
    requests_url = f"{http.base}/v2/requests/{request_id}"
    named_status, named_result = str(body.get("status_url") or ""), body.get("response_url")
    job.status_url = _own_url(session, named_status, f"{requests_url}/status")
    job.response_url = _own_url(session, str(named_result or ""), requests_url)
    session.stats.submitted += 1
    job.order = session.order.add()
    job.ahead = session.order.ahead(job.order)
    try:
        if session.on_submitted is not None:
            hook = functools.partial(session.on_submitted, job.request.request_key, request_id)
            await asyncio.get_running_loop().run_in_executor(session.hooks, hook)
    except Exception as exc:
        # The job exists and is billed: follow it to its result rather than drop its
        # id, and submit nothing more while the caller cannot keep ids.
        run.stop(exc)
        log.warning(
            "could not record request id %s of %s (%s); following it to its result "
            "and submitting nothing more",
            request_id,
            job.request.key,
            exc,
        )
    finally:
        job.attempts.unrecorded_submit = False
    return True


def _own_url(session: Session, named: str, documented: str) -> str:
    """``named`` (a status or result URL the API handed out) when the key may go there,
    else the ``documented`` one under the API root (the key never goes to other hosts)."""
    if not named or session.http.trust(named):
        return named or documented
    session.warn_once(
        "foreign-url",
        "the API named a status/result URL on an origin outside its own domain (or over "
        "http); the key is not sent there, polling the documented URLs under %s instead",
        session.http.base,
    )
    return documented


def _refuse_model(session: Session, response: httpx.Response) -> None:
    """Raise :class:`ModelNotFound` for a 404 to a POST: the URL is wrong for every image."""
    if response.status_code == 404:
        raise ModelNotFound(
            f"Segmind answered HTTP 404 ({session.http.error_text(response)}) to a request for "
            f"model {session.config.model!r} at {session.http.base}: check that "
            "SEGMIND_BASE_URL is the API root (e.g. https://api.segmind.com, a trailing /v1 is "
            "fine) and the model slug is right (unset SEGMIND_API_KEY and SEGMIND_BASE_URL to "
            "use the local emulator)."
        )


async def follow(session: Session, job: Job, *, first_delay: float, optimistic: bool) -> object:
    """Poll until the job ends: a result, or :data:`EXPIRED` for an unknown request id.

    While the job is believed done (``optimistic``), the result URL is asked directly,
    saving the status round trip, and asked again while it answers 200 with a running
    status; any other answer there without ``output`` sends us to the documented status URL.
    Only a FAILED status in the body is final there; the status URL's 422 is final too.
    """
    http = session.http
    ask = _Ask.EARLY_RESULT if optimistic else _Ask.STATUS
    delay = first_delay
    planned = optimistic  # the poll the estimator planned: was the job done by then?
    misses = refetches = empty_results = 0
    while True:
        await wait_before_poll(session, job, delay)
        on_result = ask is not _Ask.STATUS
        try:
            url = job.response_url if on_result else job.status_url
            response = await http.send(
                "result" if on_result else "status", "GET", url, job.attempts
            )
            code, body = response.status_code, json_body(response)
            state = body.get("status")
            if planned:
                planned = False
                session.estimator.first_poll_seen(done=state not in (QUEUED, PROCESSING))
            if state == FAILED or (code == 422 and not on_result):
                return session.failed(job, error_of(http, response, body), retryable=False)
            if on_result and code == 200 and body.get("output"):
                return await _completed(session, job, body)
        except (Refetch, AnswerTooLarge) as failure:
            if isinstance(failure, AnswerTooLarge) and not on_result:
                raise  # a status answer: not about the image
            exc = failure
            if isinstance(failure, AnswerTooLarge):  # a base64 output too large
                exc = bad_media(session, job, failure.error)
            refetches += 1
            if refetches > _MAX_REFETCHES:
                raise StepFailed(
                    f"{exc.error} (the result was asked again {_MAX_REFETCHES} times)",
                    retryable=True,
                ) from None
            log.info("%s: %s; asking for the result again", job.request.key, exc.error)
            delay = session.next_poll(job, refetches, queued=False)
            continue
        if on_result and code == 200 and state == COMPLETED:
            empty_results += 1
            if empty_results >= _MAX_EMPTY_RESULTS:
                raise StepFailed(
                    f"result: request {job.request_id} says COMPLETED but its result "
                    f"carried no output ({empty_results} times)",
                    retryable=True,
                )
        if code == 404 and ask is not _Ask.EARLY_RESULT:
            return EXPIRED
        if ask is _Ask.STATUS and code == 200 and state == COMPLETED:
            ask, delay = _Ask.RESULT, 0.0
        elif code == 200 and state in (QUEUED, PROCESSING):
            # still running; a result URL that answers progress is polled again directly
            misses += 1
            delay = session.next_poll(job, misses, queued=state == QUEUED)
        elif on_result:  # an answer we cannot read as progress: ask /status instead
            misses += 1
            delay = 0.0 if code == 404 else session.next_poll(job, misses, queued=False)
            ask = _Ask.STATUS
        else:  # the job was accepted (and paid): a later run may still collect it
            raise StepFailed(
                f"status: HTTP {code}: {error_of(http, response, body)}", retryable=True
            )


async def wait_before_poll(session: Session, job: Job, delay: float) -> None:
    """Sleep ``delay`` seconds before the next poll, unless the deadline comes first."""
    if delay <= 0:
        return
    if delay >= job.attempts.remaining():
        raise StepFailed(
            f"deadline of {session.config.deadline:g} s reached while request "
            f"{job.request_id} was still running (attach to it to collect it)",
            retryable=True,
            timed_out=True,
        )
    await asyncio.sleep(delay)


async def _completed(session: Session, job: Job, body: dict[str, Any]) -> GenerationResult:
    image = await image_of_output(session, job, body["output"])
    session.estimator.completed()
    metrics = body.get("metrics") or {}
    if metrics.get("remaining_credits") is not None:
        session.stats.remaining_credits = number(metrics["remaining_credits"])
    if job.request_id is not None and job.submitted_at is not None:
        await session.guard.report(number(metrics.get("cost")))  # a job this engine paid
    return await session.success(
        job,
        image,
        inference_time=number(metrics.get("inference_time")),
        queue_time=number(metrics.get("queue_time")),
        cost=number(metrics.get("cost")),
    )

"""Output decoding: a result's ``output`` (a media URL or base64) or a v1 body, to a checked
image; anything that is not a whole image is :class:`Refetch` (ask the result again)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import IO

from flux_pipeline.segmind.http.exceptions import AnswerTooLarge, StepFailed
from flux_pipeline.segmind.media import CheckedImage, NotAnImage, check_image, far_from_requested
from flux_pipeline.segmind.session import Job, Refetch, Session

log = logging.getLogger("flux_pipeline.segmind")

#: Images decoded at once (each takes up to ``media.MAX_PIXELS`` x 4 bytes while it is).
DECODERS = 2


async def image_of_output(session: Session, job: Job, output: object) -> CheckedImage:
    """The image a v2 result's ``output`` names: downloaded from its URL, or inline base64."""
    if isinstance(output, list):
        output = output[0]
    if isinstance(output, str) and output.startswith(("http://", "https://")):
        return await _download(session, job, output)
    return await check(session, job, "result", inline_image(session, job, str(output)))


async def _download(session: Session, job: Job, url: str) -> CheckedImage:
    http = session.http
    try:
        with await http.send_media("download", "GET", url, job.attempts) as answer:
            response = answer.response
            if response.status_code != 200:
                error = f"download: HTTP {response.status_code}: {http.error_text(response)}"
                refused = 400 <= response.status_code < 500  # an expired signed URL: ask again
                raise (Refetch if refused else StepFailed)(error, retryable=True)
            return await check(session, job, "download", answer.body or response.content)
    except AnswerTooLarge as exc:
        raise bad_media(session, job, exc.error) from None


def inline_image(session: Session, job: Job, data: str) -> bytes:
    """The bytes of a base64 output (plain or a ``data:`` URI), at most ``max_image_bytes``."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    limit = session.config.max_image_bytes
    if len(data) > limit * 4 // 3 + 4:
        raise bad_media(session, job, f"base64 output over {limit} bytes (max_image_bytes)")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_media(session, job, f"output is neither a URL nor base64 ({exc})") from None


async def check(session: Session, job: Job, kind: str, body: IO[bytes] | bytes) -> CheckedImage:
    """The image of ``body`` once it decoded fully (see ``segmind/media.py``), else
    :class:`Refetch`; warns about (and counts) a size far from the requested one."""
    async with session.decoders:
        try:
            image = await asyncio.to_thread(check_image, body)
        except NotAnImage as exc:
            raise bad_media(session, job, f"{kind}: {exc}") from None
    request = job.request
    if far_from_requested(request.aspect_ratio, image.width, image.height):
        session.stats.unexpected_sizes += 1
        session.warn_once(
            "size",
            "%s: image of %dx%d for aspect ratio %s (kept; further ones are counted in "
            "unexpected_sizes)",
            request.key,
            image.width,
            image.height,
            request.aspect_ratio,
        )
    return image


def bad_media(session: Session, job: Job, error: str) -> Refetch:
    """A body that is not a whole image, counted: the result is to be asked again."""
    session.stats.bad_media += 1
    log.info("%s: %s", job.request.key, error)
    return Refetch(f"{error}: not stored", retryable=True)

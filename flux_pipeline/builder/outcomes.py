"""One request key's outcome: stored from an engine result, or read back from the ledger, and
turned into the lineage rows of every prompt (of any partition) that asked for it. A row's
``prompt_id``, ``variant`` and ``attributes`` are always its own prompt's, whoever generated it.

Each COMPLETED row carries the facts of its image's pixels (:mod:`flux_pipeline.quality`):
computed from the engine's decode when the image is stored, or, for an image stored before they
were kept, from one read and decode of the stored copy, then kept in the ledger.

A row is ``cached`` exactly when the outcome was generated for another partition than the row's
own (:attr:`Outcome.partition`, kept in the ledger). Prompts of the same partition that share a
key all get the generation's row, ``cached`` false, each with its own copy of the image.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from flux_pipeline.protocol import COMPLETED, FAILED, GenerationRequest
from flux_pipeline.quality.facts import ImageFacts, picture_facts
from flux_pipeline.segmind import GenerationResult
from flux_pipeline.segmind.media import CheckedImage, NotAnImage, check_image
from flux_pipeline.store.layout import image_path
from flux_pipeline.store.ledger import Ledger, LedgerEntry
from flux_pipeline.store.lineage import LineageRow
from flux_pipeline.store.storage import ObjectStore

log = logging.getLogger("flux_pipeline.builder")

_EXTENSIONS: Final = {
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """The row as generated (its leader prompt's), the stored image's path (None: FAILED), the
    partition the generation was made for, and whether the ledger holds it (False: a retryable
    failure, for a later run to try again)."""

    row: LineageRow
    path: str | None
    partition: str | None
    final: bool = True
    #: The store's tag of the image this build wrote at ``path`` (S3 ``ETag``; else None).
    etag: str | None = None


def entry_outcome(entry: LedgerEntry, source: str | None) -> Outcome:
    """A finished ledger entry as an outcome; ``source`` is the stored copy found for it."""
    if entry.lineage is None:
        raise ValueError(f"ledger entry {entry.request_key} has no finished row")
    return Outcome(entry.lineage, source, entry.generated_for)


def store_result(
    store: ObjectStore,
    ledger: Ledger,
    result: GenerationResult,
    partition: str,
    submitted_at: datetime | None = None,
) -> Outcome:
    """Store one engine result for ``partition``: the image (atomically), then the ledger.

    A FAILED result that a later run cannot fix (400, 422, content that is not an image) is
    recorded in the ledger as final; a retryable one (deadline, ambiguous submit, budget) is
    not. ``submitted_at`` stands in when the result has none (a job re-attached to).
    """
    request = result.request
    when = result.submitted_at or submitted_at
    backend = ledger.backend
    etag = None
    if result.status == COMPLETED and result.content is not None:
        row, path, etag = _store_image(
            store, partition, result, result.content, when, backend=backend
        )
    else:
        row = _failed_row(result, result.error or "no image in the result", when, backend)
        path = None
    final = path is not None or not result.retryable
    if final:
        ledger.record_finished(request.request_key, row, path, partition)
    return Outcome(row, path, partition, final, etag)


def with_facts(store: ObjectStore, ledger: Ledger, outcome: Outcome) -> Outcome:
    """``outcome`` with the facts of its image: as it is when it has them (or no image); else
    read from its stored copy once, decoded, and kept in the ledger for every later reuse."""
    row = outcome.row
    if outcome.path is None or row.status != COMPLETED or row.phash is not None:
        return outcome
    try:
        facts = _decoded_facts(check_image(store.read_bytes(outcome.path)))
    except (NotAnImage, FileNotFoundError) as exc:
        log.warning("%s: no image facts (%s)", outcome.path, exc)
        return outcome
    row = replace(row, phash=facts.phash, luma_std=facts.luma_std)
    if outcome.final:
        ledger.record_finished(row.request_key, row, outcome.path, outcome.partition)
    return replace(outcome, row=row)


def prompt_rows(
    store: ObjectStore,
    outcome: Outcome,
    prompts: tuple[GenerationRequest, ...],
    partition: str,
    stored: dict[str, int],
    *,
    blank_luma_std: float,
) -> list[LineageRow]:
    """The rows of ``prompts`` of ``partition`` from ``outcome``, copying the image into the
    partition's folder where its copy (of the recorded size, per ``stored``) is missing;
    ``blank`` is its ``luma_std`` below ``blank_luma_std``.

    A row equal to the outcome's own (its leader, generated here) is that row, not a copy: a
    partition's rows and its outcomes are not held twice while its lineage is written."""
    cached = outcome.partition != partition
    blank = None if outcome.row.luma_std is None else outcome.row.luma_std < blank_luma_std
    rows = []
    for prompt in prompts:
        row = outcome.row
        own = (prompt.key, prompt.variant, prompt.attributes, cached, blank)
        if (row.prompt_id, row.variant, row.attributes, row.cached, row.blank) != own:
            row = replace(
                row,
                prompt_id=prompt.key,
                variant=prompt.variant,
                attributes=prompt.attributes,
                cached=cached,
                blank=blank,
            )
        if outcome.path is not None:
            if outcome.row.backend is None:
                raise ValueError(f"the stored image of {prompt.key} names no backend")
            ext = outcome.path.rsplit(".", 1)[-1]
            target = image_path(partition, prompt, ext, outcome.row.backend)
            if target != outcome.path and stored.get(target) != outcome.row.image_bytes:
                store.copy(outcome.path, target)
            uri = store.uri(target)
            if row.image_uri != uri:
                row = replace(row, image_uri=uri)
        rows.append(row)
    return rows


def _store_image(
    store: ObjectStore,
    partition: str,
    result: GenerationResult,
    content: bytes,
    submitted_at: datetime | None,
    *,
    backend: str,
) -> tuple[LineageRow, str | None, str | None]:
    # The engine decoded the body fully before handing it back: its type and size are known.
    content_type = _media_type(result)
    ext = _EXTENSIONS.get(content_type)
    if ext is None or result.width is None or result.height is None:
        unsupported = f"unsupported image type {content_type!r}"
        return _failed_row(result, unsupported, submitted_at, backend), None, None
    facts = _facts(result, content)
    path = image_path(partition, result.request, ext, backend)
    uri, etag = store.write_tagged(path, content)
    row = _row(
        result,
        submitted_at,
        backend=backend,
        status=COMPLETED,
        error=None,
        completed_at=datetime.now(UTC),
        image_uri=uri,
        image_sha256=hashlib.sha256(content).hexdigest(),
        image_bytes=len(content),
        content_type=content_type,
        width=result.width,
        height=result.height,
        phash=facts.phash,
        luma_std=facts.luma_std,
    )
    return row, path, etag


def _facts(result: GenerationResult, content: bytes) -> ImageFacts:
    """The facts of the engine's decode (decoding ``content`` again only if it kept none)."""
    if result.preview is not None:
        return picture_facts(result.preview)
    return _decoded_facts(check_image(content))


def _decoded_facts(image: CheckedImage) -> ImageFacts:
    if image.preview is None:
        raise NotAnImage("the check kept no decoded pixels")
    return picture_facts(image.preview)


def _failed_row(
    result: GenerationResult, error: str, submitted_at: datetime | None, backend: str
) -> LineageRow:
    return _row(
        result,
        submitted_at,
        backend=backend,
        status=FAILED,
        error=error,
        completed_at=result.completed_at or datetime.now(UTC),
        image_uri=None,
        image_sha256=None,
        image_bytes=None,
        content_type=None,
        width=None,
        height=None,
    )


def _row(result: GenerationResult, submitted_at: datetime | None, **outcome: Any) -> LineageRow:
    request = result.request
    return LineageRow(
        prompt_id=request.key,
        prompt=request.prompt,
        seed=request.seed,
        steps=request.steps,
        aspect_ratio=request.aspect_ratio,
        model=request.model,
        request_id=result.request_id,
        inference_time=result.inference_time,
        queue_time=result.queue_time,
        cost=result.cost,
        attempts=result.attempts,
        submitted_at=submitted_at,
        request_key=request.request_key,
        cached=False,
        variant=request.variant,
        attributes=request.attributes,
        recovered_from=result.recovered_from,
        **outcome,
    )


def _media_type(result: GenerationResult) -> str:
    return (result.content_type or "").split(";")[0].strip().lower()

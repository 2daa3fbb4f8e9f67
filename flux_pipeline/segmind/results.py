"""What the engine hands back for each request."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from PIL import Image

from flux_pipeline.protocol import GenerationRequest

Status = Literal["COMPLETED", "FAILED"]


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """The outcome of one :class:`GenerationRequest`: everything lineage needs."""

    request: GenerationRequest
    status: Status
    request_id: str | None
    error: str | None = None
    #: The image bytes exactly as served, and their content type (a PNG stays PNG).
    content: bytes | None = field(default=None, repr=False)
    content_type: str | None = None
    #: Pixel size of ``content``, as decoded when the engine checked it.
    width: int | None = None
    height: int | None = None
    #: The pixels the engine decoded to check ``content``, at about 1/8 of each side.
    preview: Image.Image | None = field(default=None, repr=False, compare=False)
    #: ``metrics.inference_time`` (or ``x-generation-time``) exactly as reported.
    inference_time: float | None = None
    queue_time: float | None = None
    cost: float | None = None
    #: HTTP requests spent on this image, retries included.
    attempts: int = 0
    #: UTC, client clock: when the accepted submit was sent / when the outcome was seen.
    submitted_at: datetime | None = None
    completed_at: datetime | None = None
    #: True when a later run may succeed (deadline, ambiguous submit); False for 400/422.
    retryable: bool = False
    #: True when the deadline ended the wait (the job may still finish server-side).
    timed_out: bool = False
    #: ``"history"`` when the job or its image came from the account's record (an adopted
    #: ambiguous submit, an expired result recovered); None otherwise.
    recovered_from: str | None = None

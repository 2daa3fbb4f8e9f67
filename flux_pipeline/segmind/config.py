"""Engine settings as one small value object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flux_pipeline.protocol import DEFAULT_BASE_URL, MODEL

Mode = Literal["async", "sync"]


@dataclass(frozen=True)
class EngineConfig:
    """How the engine talks to Segmind. The key is kept out of ``repr``."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    model: str = MODEL
    mode: Mode = "async"
    #: Jobs in flight at once (submitted and not yet finished).
    max_concurrency: int = 16
    #: Client-side pace over every API request (submit, poll, result, download).
    max_requests_per_second: float = 20.0
    #: Timeout of one HTTP request, seconds.
    request_timeout: float = 30.0
    #: Give up on one image after this many seconds, all retries included.
    deadline: float = 600.0
    #: Retries of one step (submit, status, result, download) before the image fails.
    max_retries: int = 8
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    #: Ask for the output inline as base64 instead of a media URL.
    base64: bool = False
    #: Seconds per step assumed before the first job reports its ``inference_time``.
    prior_step_time: float = 0.25
    #: Re-POST a submit whose answer never arrived (may pay twice). Off by default.
    repost_ambiguous_submits: bool = False

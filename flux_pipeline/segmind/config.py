"""Engine settings as one small value object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flux_pipeline.protocol import DEFAULT_BASE_URL, MODEL
from flux_pipeline.segmind.errors import AuthenticationError

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

    def __post_init__(self) -> None:
        # A key read from a file written by ``echo`` or a CRLF .env ends in whitespace: drop it.
        key = self.api_key.strip()
        object.__setattr__(self, "api_key", key)
        if any(not "!" <= char <= "~" for char in key):
            # Never quote the key: the message ends up in logs and run metadata.
            raise AuthenticationError(
                f"SEGMIND_API_KEY holds a character that cannot be sent in an HTTP header "
                f"(control, space or non-ASCII) inside its {len(key)} characters: set it to "
                "the bare key (SG_ followed by hex digits)."
            )

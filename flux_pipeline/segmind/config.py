"""Engine settings as one small value object, checked when it is made."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypedDict, get_args

from flux_pipeline.protocol import DEFAULT_BASE_URL, MODEL
from flux_pipeline.segmind.errors import AuthenticationError

log = logging.getLogger("flux_pipeline.segmind")

Mode = Literal["async", "sync", "auto"]
MODES: tuple[str, ...] = get_args(Mode)


class Bound(TypedDict, total=False):
    """A lower bound as pydantic's ``Field`` takes it: above ``gt``, or at least ``ge``."""

    gt: float
    ge: float


#: The lower bound of every numeric setting, stated once: :class:`EngineConfig` checks them
#: and the Dagster resource declares its pydantic ``Field`` s with them (``Field(**bound)``).
BOUNDS: Final[Mapping[str, Bound]] = {
    "max_concurrency": {"ge": 1},
    "requests_per_minute": {"gt": 0},
    "max_requests_per_second": {"gt": 0},
    "request_timeout": {"gt": 0},
    "deadline": {"gt": 0},
    "max_retries": {"ge": 0},
    "backoff_base": {"ge": 0},
    "backoff_max": {"ge": 0},
    "prior_step_time": {"ge": 0},
    "max_new_images": {"ge": 0},
    "max_cost": {"ge": 0},
    "price_per_image": {"ge": 0},
    "max_image_bytes": {"ge": 1024},
}


@dataclass(frozen=True)
class EngineConfig:
    """How the engine talks to Segmind. The key is kept out of ``repr``.

    Impossible values raise :class:`ValueError` naming the field: one past its bound in
    :data:`BOUNDS`, or one that breaks a rule across fields (see :meth:`_check`).
    """

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    model: str = MODEL
    #: async: v2 submit/poll/result; sync: one v1 POST per image (1 request per image);
    #: auto: async, switching to sync while a quota binds (and back once it no longer does).
    mode: Mode = "auto"
    #: Jobs in flight at once (submitted and not yet finished).
    max_concurrency: int = 32
    #: The account's quota in API requests per minute (submit, status, result, v1 POST; never
    #: media downloads). None: no fixed cap, only concurrency plus AIMD on 429 answers.
    requests_per_minute: float | None = None
    #: Deprecated alias of ``requests_per_minute`` / 60 (mapped to it, then cleared).
    max_requests_per_second: float | None = None
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
    #: Budget of one engine: accepted submits (new billed jobs; attached ones never count).
    max_new_images: int | None = None
    #: Budget of one engine in the service's cost unit (reported cost, else ``price_per_image``).
    max_cost: float | None = None
    #: Cost of one image assumed while the service has reported none.
    price_per_image: float | None = None
    #: Largest image body read (media download, v1 answer, decoded base64 output): reading
    #: stops past it and the image is asked again, then fails. 32 MiB: a one-megapixel PNG
    #: is 1 to 4 MiB.
    max_image_bytes: int = 32 * 1024 * 1024

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
        self._map_deprecated_rate()
        self._check()

    def _map_deprecated_rate(self) -> None:
        per_second = self.max_requests_per_second
        if per_second is None:
            return
        _within("max_requests_per_second", per_second)
        per_minute = per_second * 60
        if self.requests_per_minute is not None and self.requests_per_minute != per_minute:
            raise ValueError(
                f"max_requests_per_second: deprecated alias of requests_per_minute / 60, "
                f"got {per_second} and requests_per_minute={self.requests_per_minute}: "
                "set requests_per_minute only"
            )
        log.warning(
            "max_requests_per_second is deprecated: set requests_per_minute=%g instead "
            "(it paces API requests only, never media downloads)",
            per_minute,
        )
        object.__setattr__(self, "requests_per_minute", per_minute)
        object.__setattr__(self, "max_requests_per_second", None)

    def _check(self) -> None:
        """Each field within its bound, then the rules across fields."""
        if self.mode not in MODES:
            raise ValueError(f"mode: must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in BOUNDS:
            value = getattr(self, name)
            if value is not None:
                _within(name, value)
        if self.backoff_max < self.backoff_base:
            raise ValueError(
                f"backoff_max: must be >= backoff_base ({self.backoff_base}), "
                f"got {self.backoff_max}"
            )
        if self.max_cost is not None and self.price_per_image is None:
            raise ValueError(
                "max_cost: needs price_per_image too (the cost of one image assumed until the "
                "service reports one), so that no submit can pass the budget"
            )


def _within(name: str, value: float) -> None:
    """Raise :class:`ValueError` naming ``name`` when ``value`` is past its bound (or NaN)."""
    bound = BOUNDS[name]
    if "gt" in bound and not value > bound["gt"]:
        raise ValueError(f"{name}: must be > {bound['gt']:g}, got {value}")
    if "ge" in bound and not value >= bound["ge"]:
        raise ValueError(f"{name}: must be >= {bound['ge']:g}, got {value}")

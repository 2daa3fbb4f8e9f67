"""The engine's settings, each declared once: the ``segmind`` resource's fields derive from them.

:class:`EngineOptions` holds what a run may tune, :class:`SegmindSettings` adds where the
service is (the ``segmind`` resource's fields, ``resources/segmind.py`` subclasses it), and
:class:`EngineConfig` is what one engine runs with. Add a setting as a field of
:class:`EngineOptions` (see :mod:`flux_pipeline.settings`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Literal, Self, get_args

from pydantic import Field, field_validator, model_validator

from flux_pipeline.protocol import DEFAULT_BASE_URL, MODEL
from flux_pipeline.segmind.errors import AuthenticationError
from flux_pipeline.settings import Settings, ValueObject, setting

log = logging.getLogger("flux_pipeline.segmind")

Mode = Literal["async", "sync", "auto"]
MODES: tuple[str, ...] = get_args(Mode)


class EngineOptions(Settings):
    """How the engine talks to the service: each field a setting a run may override."""

    model: str = setting(MODEL, "Model slug.")
    mode: Mode = setting(
        "auto",
        "async: v2 submit/poll/result; sync: one v1 POST per image; auto: v2, switching to v1 "
        "while a quota binds (1 request per image instead of 2 or more) and back once it no "
        "longer does.",
    )
    max_concurrency: int = setting(32, "Images in flight at once.", ge=1)
    requests_per_minute: float | None = setting(
        None,
        "The account's quota in API requests per minute (submit, status, result, v1 POST; "
        "never media downloads). Unset: SEGMIND_REQUESTS_PER_MINUTE when the run starts, else "
        "no fixed cap, only AIMD on 429 answers.",
        gt=0,
    )
    max_requests_per_second: float | None = setting(
        None, "Deprecated alias of requests_per_minute / 60.", gt=0
    )
    request_timeout: float = setting(30.0, "Seconds one HTTP request may take.", gt=0)
    deadline: float = setting(600.0, "Seconds one image may take, retries included.", gt=0)
    max_retries: int = setting(
        8, "Retries of one step after transport errors, 429, 500, 502, 504.", ge=0
    )
    backoff_base: float = setting(0.5, "First retry backoff cap, seconds (doubles).", ge=0)
    backoff_max: float = setting(
        30.0, "Largest backoff between retries, seconds (>= backoff_base).", ge=0
    )
    base64: bool = setting(False, "Ask for outputs inline as base64 instead of a media URL.")
    repost_ambiguous_submits: bool = setting(
        False,
        "Deprecated and ignored (a warning says so): a submit whose answer never arrived is "
        "resolved from the account's record of requests, never re-POSTed blindly.",
    )
    history_grace: float = setting(
        60.0,
        "Seconds after sending a submit whose answer never arrived before it is deemed never "
        "made when the account's record does not show it (the record may lag).",
        ge=0,
    )
    max_new_images: int | None = setting(
        None,
        "Budget of one engine (one run): accepted submits, new billed jobs (re-attached jobs "
        "never count). Unset: no budget.",
        ge=0,
    )
    max_cost: float | None = setting(
        None,
        "Budget of one engine in USD (the reported cost, else price_per_image); needs "
        "price_per_image. Unset: no budget.",
        ge=0,
    )
    price_per_image: float | None = setting(
        None, "USD one image is assumed to cost while the service has reported none.", ge=0
    )
    max_image_bytes: int = setting(
        32 * 1024 * 1024,
        "Largest image body read (download, v1 answer, base64 output); past it reading stops "
        "and the image is asked again, then fails. A one-megapixel PNG is 1 to 4 MiB.",
        ge=1024,
    )

    @model_validator(mode="after")
    def _rules_across_fields(self) -> Self:
        """The rules no single field's bound states; each message names its field."""
        per_second, per_minute = self.max_requests_per_second, self.requests_per_minute
        if per_second is not None and per_minute is not None and per_minute != per_second * 60:
            raise ValueError(
                f"max_requests_per_second: deprecated alias of requests_per_minute / 60, "
                f"got {per_second} and requests_per_minute={per_minute}: "
                "set requests_per_minute only"
            )
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
        return self


#: The key as run config names it: the environment variable holding it, ``{env: NAME}``.
EnvReference = dict[str, str]
#: What an environment variable's name looks like, and what a Segmind key looks like.
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOOKS_LIKE_A_KEY = re.compile(r"SG_[0-9a-fA-F]{8,}")
#: What to do instead of giving the key itself (the message of every refusal).
KEY_AS_REFERENCE = (
    "takes an environment reference, never the key itself: remove the key from the run "
    "config or code, and set SEGMIND_API_KEY in the environment of the processes that run "
    'steps (or name another variable: {env: NAME} in run config, dg.EnvVar("NAME") in code)'
)


class SegmindSettings(EngineOptions):
    """The ``segmind`` resource's fields: the engine's options, and where the service is.

    ``api_key`` is only ever a reference to an environment variable, so the key itself never
    enters run config, and so never Dagster's run storage or UI.
    """

    api_key: EnvReference | None = setting(
        None,
        "The environment variable holding the Segmind API key, as a reference: "
        '{env: SEGMIND_API_KEY} in run config, dg.EnvVar("SEGMIND_API_KEY") in code; read '
        "when the run starts. A literal key fails validation. Unset: SEGMIND_API_KEY.",
        secret=True,
        shown_as="`{env: NAME}`",
    )
    base_url: str | None = setting(
        None,
        f"API root (SEGMIND_BASE_URL), default {DEFAULT_BASE_URL}; a trailing /v1 is fine. "
        "Leave it and api_key unset to run on the embedded emulator (synthetic images).",
    )
    emulator_workers: int = setting(
        8, "Inference slots of the embedded emulator (used without a key or URL).", ge=1
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _reference_only(cls, value: object) -> object:
        """Refuse a literal key (never quoted) and anything but ``{env: NAME}``."""
        if value is None:
            return None
        if isinstance(value, str):
            raise ValueError(KEY_AS_REFERENCE)
        name = value.get("env") if isinstance(value, Mapping) and len(value) == 1 else None
        if not isinstance(name, str) or not _VARIABLE_NAME.fullmatch(name):
            raise ValueError(
                f"must be {{env: NAME}} with NAME a variable's name: it {KEY_AS_REFERENCE}"
            )
        if _LOOKS_LIKE_A_KEY.fullmatch(name):
            raise ValueError(f"names a variable that looks like a key: it {KEY_AS_REFERENCE}")
        return {"env": name}


class EngineConfig(ValueObject, EngineOptions):
    """What one engine runs with: a service and its options. The key is kept out of ``repr``.

    An impossible value raises :class:`ValueError` naming the field. The deprecated
    ``max_requests_per_second`` is mapped to ``requests_per_minute`` (and cleared).
    """

    api_key: str = Field(repr=False, description="The key sent in the x-api-key header.")
    base_url: str = setting(DEFAULT_BASE_URL, "API root; a trailing /v1 is fine.")
    prior_step_time: float = setting(
        0.25, "Seconds per step assumed before the first job reports its inference_time.", ge=0
    )

    @field_validator("api_key", mode="after")
    @classmethod
    def _sendable_key(cls, key: str) -> str:
        # A key read from a file written by ``echo`` or a CRLF .env ends in whitespace: drop it.
        key = key.strip()
        if any(not "!" <= char <= "~" for char in key):
            # Never quote the key: the message ends up in logs and run metadata.
            raise AuthenticationError(
                f"SEGMIND_API_KEY holds a character that cannot be sent in an HTTP header "
                f"(control, space or non-ASCII) inside its {len(key)} characters: set it to "
                "the bare key (SG_ followed by hex digits)."
            )
        return key

    @model_validator(mode="after")
    def _ignore_reposts(self) -> Self:
        if self.repost_ambiguous_submits:
            log.warning(
                "repost_ambiguous_submits is deprecated and ignored: a submit whose answer "
                "never arrived is looked up in the account's record of requests (adopted when "
                "found, sent again only after history_grace seconds without it)"
            )
        return self

    @model_validator(mode="after")
    def _map_deprecated_rate(self) -> Self:
        per_second = self.max_requests_per_second
        if per_second is None:
            return self
        per_minute = per_second * 60
        log.warning(
            "max_requests_per_second is deprecated: set requests_per_minute=%g instead "
            "(it paces API requests only, never media downloads)",
            per_minute,
        )
        object.__setattr__(self, "requests_per_minute", per_minute)
        object.__setattr__(self, "max_requests_per_second", None)
        return self

"""The emulator's knobs, each declared once: the ``flux-pipeline emulator`` flags derive from them.

Add a knob as a field of :class:`EmulatorSettings` (see :mod:`flux_pipeline.settings`); its flag
is named after it (``blank_rate`` -> ``--blank-rate``) unless ``flag=`` says otherwise.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Strict, field_validator, model_validator

from flux_pipeline.emulator.quota import QuotaCounts
from flux_pipeline.settings import Settings, ValueObject, setting

OutputFormat = Literal["jpeg", "png"]
#: What a bad media answer holds: a PNG header then padding, a PNG cut in half, an HTML page.
BadMedia = Literal["oversized", "truncated", "html"]

#: Credits one accepted job takes from a ``credits`` balance.
COST_PER_JOB = 1.0
#: USD one image costs by default (``x-cost``, ``metrics.cost``, the record's
#: ``credits_deduction``): Segmind's price of Fast Flux.1 Schnell.
DEFAULT_PRICE = 0.0026
#: Balance reported for keys without a configured credit budget.
UNLIMITED_BALANCE = 1_000_000.0


class EmulatorAddress(Settings):
    """Where ``flux-pipeline emulator`` listens."""

    host: str = setting("127.0.0.1", "interface to bind")
    port: int = setting(8765, "port, 0 for any free one", ge=0, le=65535)


class EmulatorSettings(ValueObject):
    """How the local Segmind-compatible server behaves. Keys are kept out of ``repr``."""

    api_keys: tuple[str, ...] = setting(
        (),
        "accepted x-api-key (repeatable); none given: any non-empty key is accepted",
        flag="--api-key",
        metavar="KEY",
        secret=True,
    )
    workers: int = setting(4, "concurrent inference slots", ge=1)
    step_time: float = setting(
        0.3, "seconds one denoising step holds a slot (4 steps x 0.3 s ~ the real service)", ge=0
    )
    fault_rate: float = setting(
        0.0, "probability of answering any API request 500/502/504", ge=0, le=1
    )
    latency: float = setting(
        0.0,
        "send each API answer (faulted and refused ones too) a seeded random 0..SECONDS late",
        ge=0,
        finite=True,
        metavar="SECONDS",
    )
    retention: float = setting(
        3600.0, "seconds a job's status and result stay available after submission", gt=0
    )
    seed: int = setting(0, "seed of faults, answer delays and inference-time jitter")
    rate_limit: float | None = setting(
        None,
        "requests per second per key, a token bucket over every API request with a one-second "
        "burst; applies alongside --quota-per-minute (default: unlimited)",
        gt=0,
    )
    quota_per_minute: Annotated[int, Strict()] | None = setting(
        None,
        "account quota: API requests per key in any sliding minute; past it 429 with "
        "Retry-After and x-rate-limit-reset-at-utc (default: none)",
        ge=1,
        metavar="Q",
    )
    quota_counts: QuotaCounts = setting(
        "all",
        "what the quota counts: all API requests (submit, status, result, v1 POST) or only "
        "submits and v1 POSTs (polls are then neither counted nor refused)",
    )
    quota_window: float = setting(
        60.0,
        "length of the quota's 'minute' in seconds: time scaling for tests and benchmarks",
        gt=0,
        finite=True,
        metavar="SECONDS",
    )
    credits: float | None = setting(
        None, "credit balance per key, one per job; 406 when spent (default: unlimited)", ge=0
    )
    output_format: OutputFormat = setting("jpeg", "image encoding")
    bad_media: BadMedia | None = setting(
        None,
        "serve bad image bodies: oversized (a PNG header then padding, streamed without "
        "Content-Length), truncated (a PNG/JPEG cut in half), html (an error page)",
    )
    bad_media_rate: float = setting(
        1.0, "share of image answers that are bad, seeded per answer", ge=0, le=1, metavar="P"
    )
    oversized_bytes: int = setting(
        400 * 1024 * 1024, "bytes of an oversized body", ge=64, metavar="N"
    )
    blank_rate: float = setting(
        0.0,
        "share of jobs answered with an all-black image, like a safety filter (seeded per "
        "request key)",
        ge=0,
        le=1,
        metavar="P",
    )
    duplicate_rate: float = setting(
        0.0,
        "share of jobs answered with the picture of an earlier job of the same aspect ratio, "
        "re-encoded: other bytes, a phash within 2 bits (seeded per request key)",
        ge=0,
        le=1,
        metavar="P",
    )
    metrics: bool = setting(
        True,
        "status and result bodies carry metrics (queue_time, inference_time, cost); "
        "--no-metrics leaves them out",
        flag="--no-metrics",
    )
    v2_only: bool = setting(False, "no sync endpoint: every v1 POST is answered 404")
    status_origin: str | None = setting(
        None,
        "origin (scheme://host:port) named in status_url/response_url instead of the "
        "emulator's own: a service handing out URLs of another host",
        metavar="URL",
    )

    history_retention: float | None = setting(
        None,
        "seconds the account's record keeps a request (default: the process's life)",
        gt=0,
        metavar="SECONDS",
    )
    price: float = setting(
        DEFAULT_PRICE,
        "USD one image costs: x-cost, metrics.cost and the record's credits_deduction",
        ge=0,
        finite=True,
        metavar="USD",
    )
    drop_submit_answers: float = setting(
        0.0,
        "share of accepted submits (v2 and v1) whose answer is held until the client gives up",
        ge=0,
        le=1,
        metavar="P",
    )
    accept_then_502: float = setting(
        0.0,
        "share of accepted submits (v2 and v1) answered 502, the job run, recorded and billed",
        ge=0,
        le=1,
        metavar="P",
    )

    @field_validator("api_keys")
    @classmethod
    def _non_empty_keys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        if any(not key for key in keys):
            raise ValueError("keys must be non-empty strings")
        return keys

    @field_validator("status_origin")
    @classmethod
    def _http_origin(cls, origin: str | None) -> str | None:
        if origin is not None and not origin.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) origin")
        return origin

    @model_validator(mode="after")
    def _lost_answers_at_most_all(self) -> Self:
        lost = self.drop_submit_answers + self.accept_then_502
        if lost > 1.0:
            raise ValueError(
                f"drop_submit_answers + accept_then_502: must be at most 1 together, got {lost}"
            )
        return self

    @property
    def content_type(self) -> str:
        """MIME type of the generated images."""
        return f"image/{self.output_format}"

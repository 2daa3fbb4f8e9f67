"""The emulator's knobs as one immutable value object."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from flux_pipeline.emulator.quota import COUNTED_KINDS, QuotaCounts

OutputFormat = Literal["jpeg", "png"]
#: What a bad media answer holds: a PNG header then padding, a PNG cut in half, an HTML page.
BadMedia = Literal["oversized", "truncated", "html"]
BAD_MEDIA: tuple[str, ...] = ("oversized", "truncated", "html")

#: Credits one accepted job costs (``x-cost`` and ``metrics.cost``).
COST_PER_JOB = 1.0
#: Balance reported for keys without a configured credit budget.
UNLIMITED_BALANCE = 1_000_000.0


@dataclass(frozen=True)
class EmulatorSettings:
    """How the local Segmind-compatible server behaves. Keys are kept out of ``repr``."""

    #: Accepted ``x-api-key`` values; empty means any non-empty key is accepted.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    #: Concurrent inference slots.
    workers: int = 4
    #: Seconds one denoising step holds a slot (4 steps x 0.3 s ~ the real service).
    step_time: float = 0.3
    #: Probability that any API request is answered 500, 502 or 504 instead.
    fault_rate: float = 0.0
    #: Each API answer (faulted and refused ones too) is sent a seeded 0..latency seconds late.
    latency: float = 0.0
    #: Seconds a job's status and result stay available after submission.
    retention: float = 3600.0
    #: Makes faults, answer delays and inference-time jitter reproducible.
    seed: int = 0
    #: Requests per second allowed per key (token bucket over every API request, a burst of one
    #: second's worth); ``None`` disables it. Independent of the quota: a request must pass both.
    rate_limit: float | None = None
    #: The account quota: API requests per key in any sliding ``quota_window`` (a minute);
    #: ``None`` disables it. Past it: 429 with ``Retry-After`` and ``x-rate-limit-reset-at-utc``.
    quota_per_minute: int | None = None
    #: What the quota counts: ``"all"`` API requests (submit, status, result, v1 POST) or only
    #: ``"submits"`` (v2 submit and v1 POST; polls are neither counted nor refused).
    quota_counts: QuotaCounts = "all"
    #: Seconds of the quota's sliding window: 60, or less as time scaling for tests and benchmarks.
    quota_window: float = 60.0
    #: Credit balance of each key (one credit per job); ``None`` means unlimited.
    credits: float | None = None
    #: Encoding of generated images.
    output_format: OutputFormat = "jpeg"
    #: Serve bad image bodies (media downloads, v1 answers, base64 outputs) instead of images.
    bad_media: BadMedia | None = None
    #: Share of image answers that are bad (seeded per answer), when ``bad_media`` is set.
    bad_media_rate: float = 1.0
    #: Bytes an ``oversized`` body streams (a PNG header, then zeros; no Content-Length).
    oversized_bytes: int = 400 * 1024 * 1024
    #: Status and result bodies carry ``metrics`` (queue and inference time, cost).
    metrics: bool = True
    #: No sync endpoint: every v1 POST is answered 404.
    v2_only: bool = False
    #: Origin (``scheme://host:port``) named in ``status_url`` / ``response_url`` instead of
    #: the emulator's own: a service handing out URLs of another host.
    status_origin: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.api_keys, str):
            raise ValueError("api_keys: expected a tuple of keys, got a single string")
        if any(not key for key in self.api_keys):
            raise ValueError("api_keys: keys must be non-empty strings")
        if self.workers < 1:
            raise ValueError(f"workers: must be at least 1, got {self.workers}")
        if self.step_time < 0:
            raise ValueError(f"step_time: must be >= 0, got {self.step_time}")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError(f"fault_rate: must be between 0 and 1, got {self.fault_rate}")
        if not 0.0 <= self.latency < math.inf:
            raise ValueError(f"latency: must be finite and >= 0 seconds, got {self.latency}")
        if self.retention <= 0:
            raise ValueError(f"retention: must be > 0 seconds, got {self.retention}")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError(f"rate_limit: must be > 0 requests/s, got {self.rate_limit}")
        if self.quota_per_minute is not None and (
            isinstance(self.quota_per_minute, bool)
            or not isinstance(self.quota_per_minute, int)
            or self.quota_per_minute < 1
        ):
            raise ValueError(
                f"quota_per_minute: must be a whole number >= 1, got {self.quota_per_minute!r}"
            )
        if self.quota_counts not in COUNTED_KINDS:
            raise ValueError(f"quota_counts: must be 'all' or 'submits', got {self.quota_counts!r}")
        if not 0.0 < self.quota_window < math.inf:
            raise ValueError(
                f"quota_window: must be finite and > 0 seconds, got {self.quota_window}"
            )
        if self.credits is not None and self.credits < 0:
            raise ValueError(f"credits: must be >= 0, got {self.credits}")
        if self.bad_media is not None and self.bad_media not in BAD_MEDIA:
            raise ValueError(
                f"bad_media: must be one of {', '.join(BAD_MEDIA)}, got {self.bad_media!r}"
            )
        if not 0.0 <= self.bad_media_rate <= 1.0:
            raise ValueError(f"bad_media_rate: must be between 0 and 1, got {self.bad_media_rate}")
        if self.oversized_bytes < 64:
            raise ValueError(f"oversized_bytes: must be >= 64, got {self.oversized_bytes}")
        if self.status_origin is not None and not self.status_origin.startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                f"status_origin: must be an http(s) origin, got {self.status_origin!r}"
            )
        if self.output_format not in ("jpeg", "png"):
            raise ValueError(f"output_format: must be 'jpeg' or 'png', got {self.output_format!r}")

    @property
    def content_type(self) -> str:
        """MIME type of the generated images."""
        return f"image/{self.output_format}"

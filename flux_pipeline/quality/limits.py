"""The quality gates' three settings, read from the environment and checked before any request.

``FLUX_BLANK_LUMA_STD`` (0..255, default 2.0): ``luma_std`` below it makes an image ``blank``.
``FLUX_NEAR_DUPLICATE_BITS`` (0..16, default 4): phashes within it are near-duplicates.
``FLUX_MAX_FLAGGED_RATE`` (0..1, default 0.05): the share of flagged images a check allows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from flux_pipeline.quality.facts import DEFAULT_BLANK_LUMA_STD
from flux_pipeline.quality.near_duplicates import (
    DEFAULT_NEAR_DUPLICATE_BITS,
    MAX_NEAR_DUPLICATE_BITS,
)

DEFAULT_MAX_FLAGGED_RATE: Final = 0.05


@dataclass(frozen=True)
class QualityLimits:
    """The thresholds every quality gate reads."""

    blank_luma_std: float = DEFAULT_BLANK_LUMA_STD
    near_duplicate_bits: int = DEFAULT_NEAR_DUPLICATE_BITS
    max_flagged_rate: float = DEFAULT_MAX_FLAGGED_RATE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> QualityLimits:
        """The limits the environment sets; raises ``ValueError`` naming a bad variable."""
        env = os.environ if env is None else env
        return cls(
            blank_luma_std=_number(env, "FLUX_BLANK_LUMA_STD", DEFAULT_BLANK_LUMA_STD, 0, 255),
            near_duplicate_bits=int(
                _number(
                    env,
                    "FLUX_NEAR_DUPLICATE_BITS",
                    DEFAULT_NEAR_DUPLICATE_BITS,
                    0,
                    MAX_NEAR_DUPLICATE_BITS,
                    whole=True,
                )
            ),
            max_flagged_rate=_number(env, "FLUX_MAX_FLAGGED_RATE", DEFAULT_MAX_FLAGGED_RATE, 0, 1),
        )


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    low: float,
    high: float,
    *,
    whole: bool = False,
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    kind = "a whole number" if whole else "a number"
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        raise ValueError(
            f"{name}: must be {kind} between {low:g} and {high:g}, got {raw!r}"
        ) from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name}: must be {kind} between {low:g} and {high:g}, got {raw!r}")
    return value

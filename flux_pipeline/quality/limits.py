"""The quality gates' three settings (declared in :mod:`flux_pipeline.settings.environment`),
read together so that a build checks them all before its first request."""

from __future__ import annotations

from dataclasses import dataclass

from flux_pipeline.settings.environment import (
    FLUX_BLANK_LUMA_STD,
    FLUX_MAX_FLAGGED_RATE,
    FLUX_NEAR_DUPLICATE_BITS,
)


@dataclass(frozen=True)
class QualityLimits:
    """The thresholds every quality gate reads."""

    blank_luma_std: float = FLUX_BLANK_LUMA_STD.default
    near_duplicate_bits: int = FLUX_NEAR_DUPLICATE_BITS.default
    max_flagged_rate: float = FLUX_MAX_FLAGGED_RATE.default

    @classmethod
    def from_env(cls) -> QualityLimits:
        """The limits the environment sets; raises ``ValueError`` naming a bad variable."""
        return cls(
            blank_luma_std=FLUX_BLANK_LUMA_STD.read(),
            near_duplicate_bits=FLUX_NEAR_DUPLICATE_BITS.read(),
            max_flagged_rate=FLUX_MAX_FLAGGED_RATE.read(),
        )

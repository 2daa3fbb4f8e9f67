"""Facts of one image, from pixels already decoded: its perceptual hash and luminance spread.

``phash`` is ``imagehash.phash`` (hash size 8) as 16 hex digits. It is computed from the
engine's reduced decode (about 1/8 of each side, see ``segmind/media.py``) instead of the
stored file: the hash only looks at a 32x32 grey thumbnail, and tests hold the two within 2
bits. ``luma_std`` is the standard deviation of the luminance (ITU-R 601, 0..255) of the same
decode; an image whose spread is below the blank threshold is ``blank`` (an all-black answer
of a safety filter, a flat frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import imagehash
import numpy as np
from PIL import Image

from flux_pipeline.settings.environment import FLUX_BLANK_LUMA_STD

#: ``luma_std`` below this marks an image ``blank`` unless ``FLUX_BLANK_LUMA_STD`` says otherwise.
DEFAULT_BLANK_LUMA_STD: Final = FLUX_BLANK_LUMA_STD.default
#: Bits of the perceptual hash (hash size 8 x 8).
PHASH_BITS: Final = 64


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What the lineage records of one image's pixels."""

    phash: str
    luma_std: float


def picture_facts(picture: Image.Image) -> ImageFacts:
    """The facts of a decoded picture (any size; the engine hands over about 1/8 scale)."""
    grey = picture if picture.mode == "L" else picture.convert("L")
    luma = np.asarray(grey, dtype=np.float32)
    spread = float(luma.std()) if luma.size else 0.0
    return ImageFacts(phash=str(imagehash.phash(grey, hash_size=8)), luma_std=round(spread, 3))


def phash_int(phash: str) -> int:
    """The 64-bit integer of a 16-hex-digit ``phash``."""
    if len(phash) != PHASH_BITS // 4:
        raise ValueError(f"phash: expected {PHASH_BITS // 4} hex digits, got {phash!r}")
    return int(phash, 16)


def distance(a: str, b: str) -> int:
    """Bits in which two ``phash`` values differ."""
    return (phash_int(a) ^ phash_int(b)).bit_count()

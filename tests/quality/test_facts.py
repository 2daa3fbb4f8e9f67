"""``phash`` and ``luma_std`` from the engine's reduced decode, against ``imagehash.phash`` of
the stored file decoded in full, and the quality settings' bounds."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from flux_pipeline.emulator.render import encode, render_blank, render_image, render_picture
from flux_pipeline.protocol import ASPECT_RATIOS
from flux_pipeline.quality.facts import picture_facts
from flux_pipeline.quality.limits import QualityLimits
from flux_pipeline.segmind.media import check_image

RATIOS = sorted(ASPECT_RATIOS)


def _facts_of(body: bytes) -> tuple[str, float]:
    preview = check_image(body).preview
    assert preview is not None
    facts = picture_facts(preview)
    return facts.phash, facts.luma_std


@pytest.mark.slow
def test_the_reduced_decode_hashes_within_2_bits_of_the_stored_file_on_1000_images() -> None:
    worst = 0
    for n in range(1000):
        ratio = RATIOS[n % len(RATIOS)]
        if n % 10 == 9:  # PNG answers too (decoded in full, then reduced)
            body = encode(render_picture(f"a png number {n}", n, 2, ratio), "png")
        else:
            body = render_image(f"prompt {n % 37} of a test", n, 1 + n % 8, ratio)
        ours, _ = _facts_of(body)
        stored = imagehash.phash(Image.open(io.BytesIO(body)))
        worst = max(worst, imagehash.hex_to_hash(ours) - stored)
    assert worst <= 2


def test_the_facts_of_an_image_and_of_a_blank_one() -> None:
    phash, spread = _facts_of(render_image("a red fox", 7, 4, "1:1"))
    assert len(phash) == 16
    assert int(phash, 16) >= 0
    assert spread > 20
    assert (
        str(imagehash.phash(Image.open(io.BytesIO(render_image("a red fox", 7, 4, "1:1")))))
        == phash
    )
    blank_hash, blank_spread = _facts_of(render_blank("4:5"))
    assert blank_spread < 2.0
    assert len(blank_hash) == 16
    grey = Image.fromarray(np.full((64, 64), 128, dtype=np.uint8))
    assert picture_facts(grey).luma_std == 0.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLUX_BLANK_LUMA_STD", "256"),
        ("FLUX_BLANK_LUMA_STD", "dark"),
        ("FLUX_NEAR_DUPLICATE_BITS", "17"),
        ("FLUX_NEAR_DUPLICATE_BITS", "2.5"),
        ("FLUX_MAX_FLAGGED_RATE", "-0.1"),
        ("FLUX_MAX_FLAGGED_RATE", "nan"),
    ],
)
def test_a_bad_quality_setting_is_refused_naming_the_variable(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        QualityLimits.from_env()


def test_the_quality_settings_default_and_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert QualityLimits.from_env() == QualityLimits(2.0, 4, 0.05)
    monkeypatch.setenv("FLUX_BLANK_LUMA_STD", "5")
    monkeypatch.setenv("FLUX_NEAR_DUPLICATE_BITS", "0")
    monkeypatch.setenv("FLUX_MAX_FLAGGED_RATE", "1")
    assert QualityLimits.from_env() == QualityLimits(5.0, 0, 1.0)

"""``--blank-rate`` and ``--duplicate-rate`` over real HTTP, their flags, and the emulator's
ordinary pictures lying far apart in phash (so that only the knobs make near-duplicates)."""

from __future__ import annotations

import io
from typing import Any

import httpx
import imagehash
import numpy as np
import pytest
from PIL import Image

from flux_pipeline.commands.cli import build_parser, emulator_settings
from flux_pipeline.emulator import EmulatorSettings
from flux_pipeline.emulator.render import render_image, render_picture
from flux_pipeline.quality.facts import picture_facts
from flux_pipeline.settings.environment import FLUX_NEAR_DUPLICATE_BITS
from tests.support.emulator_http import TEST_KEY, submit, wait_for_end


def _image(http: httpx.Client, **params: Any) -> bytes:
    job = submit(http, **params)
    wait_for_end(http, job["status_url"])
    output = http.get(job["response_url"]).json()["output"]
    return http.get(output).content


def test_blank_rate_one_answers_every_job_with_an_all_black_image(emulator_factory: Any) -> None:
    emu = emulator_factory(workers=2, step_time=0.001, blank_rate=1.0)
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        body = _image(http, prompt="a bright red fox", aspect_ratio="16:9")
    image = Image.open(io.BytesIO(body))
    assert image.size == (1344, 768)
    assert np.asarray(image.convert("L")).std() == 0.0
    assert emu.stats()["jobs"]["blank"] == 1


def test_a_duplicate_is_an_earlier_picture_re_encoded(emulator_factory: Any) -> None:
    emu = emulator_factory(workers=1, step_time=0.001, duplicate_rate=1.0)
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        first = _image(http, prompt="a lighthouse at dusk", seed=1, steps=1)
        second = _image(http, prompt="a market at noon", seed=2, steps=1)
        other_ratio = _image(http, prompt="a tower", seed=3, steps=1, aspect_ratio="9:16")
    own = render_image("a market at noon", 2, 1, "1:1")
    hashes = [imagehash.phash(Image.open(io.BytesIO(b))) for b in (first, second, own)]
    assert second not in (first, own)  # other bytes than either picture
    assert hashes[1] - hashes[0] <= 2  # the first job's picture
    assert hashes[2] - hashes[0] > FLUX_NEAR_DUPLICATE_BITS.default  # not its own
    assert Image.open(io.BytesIO(other_ratio)).size == (768, 1344)  # none of its ratio before
    assert emu.stats()["jobs"]["duplicate"] == 1


def test_ordinary_pictures_of_500_seeds_lie_beyond_the_default_threshold() -> None:
    """Rendered at 1/8 scale (the engine hashes a 1/8 decode; ``python -m bench quality``
    measures full-size images over 10,000 seeds)."""
    hashes = np.array(
        [
            int(picture_facts(render_picture("a photo of a cat", seed, 4, "1:1", 8)).phash, 16)
            for seed in range(500)
        ],
        dtype=np.uint64,
    )
    smallest = min(
        int(np.bitwise_count(hashes[i] ^ hashes[i + 1 :]).min()) for i in range(len(hashes) - 1)
    )
    assert smallest > FLUX_NEAR_DUPLICATE_BITS.default


def test_the_flags_become_the_settings_and_bad_rates_are_refused() -> None:
    args = build_parser().parse_args(["emulator", "--blank-rate", "0.1", "--duplicate-rate", "0.2"])
    settings = emulator_settings(args)
    assert (settings.blank_rate, settings.duplicate_rate) == (0.1, 0.2)
    for field in ("blank_rate", "duplicate_rate"):
        with pytest.raises(ValueError, match=field):
            EmulatorSettings(**{field: 1.5})

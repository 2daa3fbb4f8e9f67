"""Synthetic images: deterministic, seed-sensitive, sized per aspect ratio."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from flux_pipeline.emulator import render_image
from flux_pipeline.protocol import ASPECT_RATIOS


def test_same_request_renders_byte_identical_jpeg() -> None:
    first = render_image("a red fox", 7, 4, "1:1")

    assert render_image("a red fox", 7, 4, "1:1") == first
    assert first[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize(
    "other",
    [("a red fox", 8, 4, "1:1"), ("a red fox", 7, 5, "1:1"), ("a blue fox", 7, 4, "1:1")],
)
def test_any_parameter_change_gives_another_image(other: tuple[str, int, int, str]) -> None:
    assert render_image(*other) != render_image("a red fox", 7, 4, "1:1")


def _open(prompt: str, seed: int) -> Image.Image:
    return Image.open(io.BytesIO(render_image(prompt, seed, 4, "1:1"))).convert("RGB")


def test_seed_changes_the_composition_not_only_the_caption() -> None:
    def middle(seed: int) -> bytes:  # between the top banner and the caption band
        return _open("a red fox", seed).crop((0, 200, 1024, 600)).tobytes()

    assert middle(1) != middle(2)


def test_banner_and_prompt_caption_are_drawn() -> None:
    image = _open("a red fox", 1)

    banner = image.crop((0, 0, 1024, 30)).getcolors(maxcolors=1 << 16) or []
    caption = image.crop((0, 900, 1024, 1024)).getcolors(maxcolors=1 << 16) or []
    assert any(r > 200 and g > 150 and b < 100 for _, (r, g, b) in banner)  # yellow text
    assert any(min(rgb) > 220 for _, rgb in caption)  # white prompt text
    assert any(max(rgb) < 30 for _, rgb in caption)  # on a dark band
    assert render_image("a red fox", 1, 4, "1:1") != render_image("a red cat", 1, 4, "1:1")


@pytest.mark.parametrize(("aspect_ratio", "size"), sorted(ASPECT_RATIOS.items()))
def test_size_follows_the_aspect_ratio(aspect_ratio: str, size: tuple[int, int]) -> None:
    with Image.open(io.BytesIO(render_image("p", 1, 1, aspect_ratio))) as image:
        assert image.size == size


def test_png_is_lossless_and_deterministic() -> None:
    png = render_image("a red fox", 7, 4, "1:1", "png")

    assert png == render_image("a red fox", 7, 4, "1:1", "png")
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"

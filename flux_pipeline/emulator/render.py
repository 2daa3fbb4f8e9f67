"""Deterministic synthetic images: a seeded abstract composition captioned with its prompt.

The same ``(prompt, seed, steps, aspect_ratio)`` always renders byte-identical output; the
caption names the prompt and marks the picture as synthetic, so a contact sheet stays honest.
"""

from __future__ import annotations

import hashlib
import io
import random
import textwrap
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from flux_pipeline.emulator.settings import OutputFormat
from flux_pipeline.protocol import ASPECT_RATIOS

#: Distinct colours of the background gradient (a column of them is stretched: cheap).
GRADIENT_LEVELS = 256
MAX_CAPTION_LINES = 5
#: JPEG quality of an image, and of the re-encoded copy ``--duplicate-rate`` serves.
QUALITY, REENCODED_QUALITY = 85, 70
BANNER = "SYNTHETIC IMAGE - Segmind emulator, not a model output"


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise RuntimeError("Pillow was built without FreeType; the emulator needs it for captions")
    return font


def _rng(prompt: str, seed: int, steps: int, aspect_ratio: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{steps}\x00{aspect_ratio}\x00{prompt}".encode()).digest()
    return random.Random(digest)


RGB = tuple[int, int, int]


def _color(rng: random.Random, low: int = 0, high: int = 255) -> RGB:
    return (rng.randint(low, high), rng.randint(low, high), rng.randint(low, high))


def _gradient(top: RGB, bottom: RGB, size: tuple[int, int]) -> Image.Image:
    """A vertical gradient: a column of GRADIENT_LEVELS colours stretched to ``size``."""
    last = GRADIENT_LEVELS - 1
    column = bytes(
        round(a + (b - a) * level / last)
        for level in range(GRADIENT_LEVELS)
        for a, b in zip(top, bottom, strict=True)
    )
    strip = Image.frombytes("RGB", (1, GRADIENT_LEVELS), column)
    return strip.resize(size, Image.Resampling.NEAREST)


def _composition(rng: random.Random, size: tuple[int, int], steps: int) -> Image.Image:
    """Seeded overlapping shapes on a seeded gradient; more steps, more shapes."""
    width, height = size
    image = _gradient(_color(rng, 20, 200), _color(rng, 20, 200), size)
    draw = ImageDraw.Draw(image)
    for _ in range(4 + 2 * steps):
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        x1 = x0 + rng.uniform(0.1, 0.6) * width
        y1 = y0 + rng.uniform(0.1, 0.6) * height
        fill = _color(rng, 40, 255)
        shape = rng.choice(("ellipse", "rectangle", "triangle"))
        if shape == "ellipse":
            draw.ellipse([x0, y0, x1, y1], fill=fill)
        elif shape == "rectangle":
            draw.rectangle([x0, y0, x1, y1], fill=fill)
        else:
            draw.polygon([(x0, y1), ((x0 + x1) / 2, y0), (x1, y1)], fill=fill)
    return image


def _caption(
    image: Image.Image, prompt: str, seed: int, steps: int, aspect_ratio: str, *, scale: int
) -> None:
    """Draw the synthetic banner on top and the wrapped prompt in a band at the bottom, laid
    out as on the full-size image (``scale`` times wider)."""
    width, height = image.size
    full = max(14, width * scale // 30)
    size = max(1, full // scale)
    font, small = _font(size), _font(max(1, max(12, full * 2 // 3) // scale))
    margin = size // 2
    draw = ImageDraw.Draw(image)

    banner_height = small.size + margin
    draw.rectangle([0, 0, width, banner_height], fill=(0, 0, 0))
    draw.text((margin, margin // 2), BANNER, font=small, fill=(255, 210, 0))

    chars_per_line = max(10, int((width * scale - 2 * margin * scale) / (0.55 * full)))
    lines = textwrap.wrap(prompt, chars_per_line) or [""]
    if len(lines) > MAX_CAPTION_LINES:
        lines = [*lines[: MAX_CAPTION_LINES - 1], lines[MAX_CAPTION_LINES - 1][:-3] + "..."]
    lines.append(f"seed {seed} - {steps} steps - {aspect_ratio}")
    line_height = round(size * 1.25)
    band_top = height - margin * 2 - line_height * len(lines)
    draw.rectangle([0, band_top, width, height], fill=(0, 0, 0))
    for index, line in enumerate(lines):
        is_meta = index == len(lines) - 1
        draw.text(
            (margin, band_top + margin + index * line_height),
            line,
            font=small if is_meta else font,
            fill=(170, 170, 170) if is_meta else (255, 255, 255),
        )


def render_picture(
    prompt: str, seed: int, steps: int, aspect_ratio: str, scale: int = 1
) -> Image.Image:
    """The synthetic picture for one request, 1/``scale`` of the size ``protocol.ASPECT_RATIOS``
    gives (a smaller one is the same layout: tests and benchmarks hash thousands of them)."""
    width, height = ASPECT_RATIOS[aspect_ratio]
    rng = _rng(prompt, seed, steps, aspect_ratio)
    image = _composition(rng, (width // scale, height // scale), steps)
    _caption(image, prompt, seed, steps, aspect_ratio, scale=scale)
    return image


def encode(image: Image.Image, output_format: OutputFormat, *, again: bool = False) -> bytes:
    """The picture as served; ``again`` re-encodes it as a copy would be (other JPEG quality,
    other PNG compression): other bytes, nearly the same pixels."""
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG", compress_level=6 if again else 1)
    else:
        image.save(buffer, format="JPEG", quality=REENCODED_QUALITY if again else QUALITY)
    return buffer.getvalue()


def render_image(
    prompt: str, seed: int, steps: int, aspect_ratio: str, output_format: OutputFormat = "jpeg"
) -> bytes:
    """Encode the synthetic image for one request; sizes follow ``protocol.ASPECT_RATIOS``."""
    return encode(render_picture(prompt, seed, steps, aspect_ratio), output_format)


def render_blank(aspect_ratio: str, output_format: OutputFormat = "jpeg") -> bytes:
    """An all-black image of the aspect ratio's size, as a safety filter answers."""
    return encode(Image.new("RGB", ASPECT_RATIOS[aspect_ratio]), output_format)

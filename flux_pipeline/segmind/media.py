"""What counts as an image: a body that decodes fully, of a plausible size.

A body is an image only when Pillow decodes all of it (``load``, not just the header ``open``
reads, so a truncated file is caught; a JPEG at 1/8 scale, which still reads all its data) as
JPEG, PNG or WebP, with at most :data:`MAX_PIXELS` pixels (checked before decoding: a small
file can claim huge dimensions).
The pixels decoded for the check are handed over with the image (:attr:`CheckedImage.preview`,
about 1/8 of each side), so later stages compute facts of the picture without decoding it again.
Dimensions far from the requested aspect ratio's size are not refused: a re-run would pay
for the same image again, and the lineage records ``width`` / ``height``; the engine warns
and counts them (``EngineStats.unexpected_sizes``).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Final

from flux_pipeline.protocol import ASPECT_RATIOS

if TYPE_CHECKING:
    from PIL import Image

#: Decoded pixels allowed (16 Mpx, 16x the model's one megapixel; 64 MB as RGBA).
MAX_PIXELS: Final = 16 * 1024 * 1024
#: The handed-over decode is 1/PREVIEW_SCALE of each side (a JPEG decodes there directly).
PREVIEW_SCALE: Final = 8
_TYPES: Final = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
#: "Far" from the expected size: aspect ratio off by more than 10 %, or pixels outside 1/2..2x.
_RATIO_SLACK, _AREA_SLACK = math.log(1.1), math.log(2.0)


class NotAnImage(ValueError):
    """The body is not a whole image: its message says why (never quoting the body)."""


@dataclass(frozen=True)
class CheckedImage:
    """An image body that decoded fully: its bytes, type (from its content) and size."""

    content: bytes = field(repr=False)
    content_type: str
    width: int
    height: int
    #: The pixels as decoded for the check, about 1/:data:`PREVIEW_SCALE` of each side.
    preview: Image.Image | None = field(default=None, repr=False, compare=False)


def check_image(body: IO[bytes] | bytes) -> CheckedImage:
    """Decode ``body`` fully; raise :class:`NotAnImage` when it is not a whole image."""
    # Imported here: a process that only loads the code location never decodes an image.
    from PIL import Image, UnidentifiedImageError

    source = io.BytesIO(body) if isinstance(body, bytes) else body
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise NotAnImage(f"{width}x{height} pixels, over the {MAX_PIXELS} allowed")
            kind = _TYPES.get(str(image.format))
            if kind is None:
                raise NotAnImage(f"unsupported image format {image.format}")
            if kind == "image/jpeg":
                # Decode at 1/8 scale: every byte of the entropy-coded data is still read (a
                # truncated body still fails), at a third of the CPU of a full-size decode.
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
            preview = _reduced(image, width)
    except NotAnImage:
        raise
    except UnidentifiedImageError:
        raise NotAnImage("not an image (no format Pillow knows starts this body)") from None
    except Exception as exc:  # Pillow raises many types for bodies that are not images
        raise NotAnImage(f"not a decodable image ({type(exc).__name__}: {exc})") from None
    source.seek(0)
    return CheckedImage(source.read(), kind, width, height, preview)


def _reduced(image: Image.Image, width: int) -> Image.Image:
    """A copy of the decoded pixels (``width`` wide in full) at about 1/:data:`PREVIEW_SCALE`
    of each side, as RGB, RGBA or L: a JPEG's draft decode already is that small."""
    if image.mode not in ("RGB", "L", "RGBA"):
        alpha = "A" in image.mode or "transparency" in image.info
        image = image.convert("RGBA" if alpha else "RGB")
    factor = image.width * PREVIEW_SCALE // max(1, width)
    return image.reduce(factor) if factor > 1 else image.copy()


def far_from_requested(aspect_ratio: str, width: int, height: int) -> bool:
    """True when ``width`` x ``height`` is far from the size the aspect ratio asks for."""
    expected = ASPECT_RATIOS.get(aspect_ratio)
    if expected is None:
        return False
    if width < 1 or height < 1:
        return True
    want_w, want_h = expected
    ratio = abs(math.log((width / height) / (want_w / want_h)))
    area = abs(math.log((width * height) / (want_w * want_h)))
    return ratio > _RATIO_SLACK or area > _AREA_SLACK

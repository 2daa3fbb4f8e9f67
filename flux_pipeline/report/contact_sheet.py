"""A contact sheet: a grid of thumbnails, each labelled with its prompt id, as PNG bytes."""

from __future__ import annotations

import io
from typing import Final

from PIL import Image, ImageDraw, ImageFont

PADDING: Final = 8
LABEL_HEIGHT: Final = 16
BACKGROUND: Final = (24, 24, 27)
TILE: Final = (63, 63, 70)
TEXT: Final = (228, 228, 231)


def render_contact_sheet(
    items: list[tuple[str, bytes]], columns: int = 6, thumb: int = 160
) -> bytes:
    """Lay ``(label, image bytes)`` out in rows of ``columns``; each image fits ``thumb`` px.

    An unreadable image becomes a grey tile saying so; an empty list gives a small sheet
    saying "no images".
    """
    if columns < 1 or thumb < 16:
        raise ValueError("columns must be >= 1 and thumb >= 16")
    font = ImageFont.load_default()
    if not items:
        sheet = Image.new("RGB", (thumb + 2 * PADDING, LABEL_HEIGHT + 2 * PADDING), BACKGROUND)
        ImageDraw.Draw(sheet).text((PADDING, PADDING), "no images", fill=TEXT, font=font)
        return _png(sheet)
    cell_w, cell_h = thumb + PADDING, thumb + LABEL_HEIGHT + PADDING
    rows = -(-len(items) // columns)
    width = min(columns, len(items)) * cell_w + PADDING
    sheet = Image.new("RGB", (width, rows * cell_h + PADDING), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, (label, data) in enumerate(items):
        x = PADDING + (index % columns) * cell_w
        y = PADDING + (index // columns) * cell_h
        tile = _thumbnail(data, thumb)
        if tile is None:
            draw.rectangle((x, y, x + thumb - 1, y + thumb - 1), fill=TILE)
            draw.text((x + 4, y + thumb // 2 - 6), "unreadable", fill=TEXT, font=font)
        else:
            sheet.paste(tile, (x + (thumb - tile.width) // 2, y + (thumb - tile.height) // 2))
        draw.text((x, y + thumb + 2), _fit(draw, label, font, thumb), fill=TEXT, font=font)
    return _png(sheet)


def _thumbnail(data: bytes, size: int) -> Image.Image | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much cheaper
            tile = image.convert("RGB")
    except Exception:  # Pillow raises several types for bytes that are not an image
        return None
    tile.thumbnail((size, size))
    return tile


def _fit(
    draw: ImageDraw.ImageDraw,
    label: str,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    width: int,
) -> str:
    if draw.textlength(label, font=font) <= width:
        return label
    while label and draw.textlength(label + "…", font=font) > width:
        label = label[:-1]
    return label + "…"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()

"""Materialization metadata a person would rather look at than read: tables, images, charts."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from datetime import datetime

import dagster as dg
import pandas as pd
import pyarrow as pa


def frame_schema(
    frame: pd.DataFrame, descriptions: Mapping[str, str] | None = None
) -> dg.TableSchema:
    """The column schema of a DataFrame (name and dtype), with one description per column."""
    described = descriptions or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=str(name), type=str(dtype), description=described.get(str(name)))
            for name, dtype in frame.dtypes.items()
        ]
    )


def arrow_schema(schema: pa.Schema, descriptions: Mapping[str, str]) -> dg.TableSchema:
    """The column schema of a pyarrow schema, nullability and descriptions included."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=field.name,
                type=str(field.type),
                description=descriptions.get(field.name),
                constraints=dg.TableColumnConstraints(nullable=field.nullable),
            )
            for field in schema
        ]
    )


def _cell(value: object) -> str | int | float | bool | None:
    """A value a ``TableRecord`` accepts: plain scalars as-is, missing as None, timestamps as ISO
    8601 to the second, the rest as text."""
    if isinstance(value, datetime):  # pandas Timestamps too
        return None if pd.isna(value) else value.isoformat(timespec="seconds")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return _cell(item())
    return str(value)


def preview_table(
    frame: pd.DataFrame, *, rows: int, descriptions: Mapping[str, str] | None = None
) -> dg.TableMetadataValue:
    """The first ``rows`` rows of a DataFrame as a metadata table."""
    records = [
        dg.TableRecord({str(name): _cell(value) for name, value in row.items()})
        for row in frame.head(rows).to_dict(orient="records")
    ]
    return dg.MetadataValue.table(records=records, schema=frame_schema(frame, descriptions))


def image_markdown(image_png: bytes, *, alt: str, max_width: int = 960) -> dg.MarkdownMetadataValue:
    """An image embedded as a ``data:`` URI in markdown, re-encoded as a small JPEG.

    Dagster's UI renders ``MetadataValue.md`` with inline images ("Show Markdown"); the value is
    stored in the event log, so it is kept to tens of kilobytes.
    """
    from PIL import Image  # here: only a run that renders a preview needs Pillow loaded

    with Image.open(io.BytesIO(image_png)) as image:
        picture = image.convert("RGB")
        if picture.width > max_width:
            height = round(picture.height * max_width / picture.width)
            picture = picture.resize((max_width, height))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=70, optimize=True)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return dg.MetadataValue.md(f"![{alt}](data:image/jpeg;base64,{encoded})")


def histogram_markdown(values: Sequence[float], *, unit: str, bins: int = 10) -> str:
    """A text histogram as a markdown table: one row per bin, with a bar of block characters."""
    if not values:
        return "_no values_"
    low, high = min(values), max(values)
    width = (high - low) / bins or 1.0
    counts = [0] * bins
    for value in values:
        counts[min(int((value - low) / width), bins - 1)] += 1
    peak = max(counts)
    lines = [f"| {unit} | count | |", "|---:|---:|:---|"]
    for index, count in enumerate(counts):
        start = low + index * width
        bar = "█" * round(30 * count / peak) if count else ""
        lines.append(f"| {start:.3f} – {start + width:.3f} | {count} | {bar} |")
    return "\n".join(lines)

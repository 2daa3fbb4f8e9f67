"""The known columns of a prompt table, cell by cell: ids, prompts, seeds, steps, aspect ratios
and variants, each read and checked by one rule shared by tables and grids.

Normalisations: surrounding whitespace is stripped from every cell; an integral float such as
``3.0`` (or the text ``"3.0"``) is read as the integer ``3``; an empty cell takes the default.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any, Final

import pandas as pd

from flux_pipeline.protocol import (
    ASPECT_RATIOS,
    DEFAULT_ASPECT_RATIO,
    DEFAULT_STEPS,
    MAX_STEPS,
    MIN_STEPS,
)

#: Longest prompt accepted, in characters (Flux's text encoder reads about 512 tokens).
MAX_PROMPT_CHARS: Final = 2000
#: Longest prompt id: it becomes part of a file name.
MAX_PROMPT_ID_CHARS: Final = 128
MAX_SEED: Final = 2**63 - 1
#: Images one row may ask for (column ``variants``).
MAX_VARIANTS: Final = 64
#: Letters and digits of any script, ``_``, ``-`` and ``.``; not starting with ``.`` or ``-``.
_SAFE_ID = re.compile(r"[^\W][\w.\-]*")
_INTEGER = re.compile(r"[+-]?\d+(\.0*)?")


class Invalid:
    """Marker for a cell that is present but not an integer."""


INVALID: Final = Invalid()


def prompt_id_problem(prompt_id: str) -> str | None:
    """Why ``prompt_id`` cannot name a file, or None."""
    if not prompt_id:
        return "is empty"
    if len(prompt_id) > MAX_PROMPT_ID_CHARS:
        return f"is {len(prompt_id)} characters long; the limit is {MAX_PROMPT_ID_CHARS}"
    if ".." in prompt_id or not _SAFE_ID.fullmatch(prompt_id) or prompt_id.startswith("-"):
        return (
            f"{prompt_id!r} is not a safe file name: use letters, digits, '_', '-' and '.', "
            "not starting with '.' or '-', without '..', path separators or control characters"
        )
    return None


def prompt_problem(prompt: str) -> str | None:
    """Why ``prompt`` (as it will be sent) cannot be sent, or None."""
    if not prompt:
        return "is empty"
    if len(prompt) > MAX_PROMPT_CHARS:
        return f"is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}"
    if any(is_control(ch) and ch not in "\n\t" for ch in prompt):
        return "contains control characters"
    return None


def seed_cell(value: Any) -> tuple[int | None, str | None]:
    """A pinned seed (None: derived per partition) and the problem, if any."""
    seed = integer(value)
    if isinstance(seed, Invalid) or (seed is not None and not 0 <= seed <= MAX_SEED):
        return None, f"must be an integer 0..{MAX_SEED} or empty, got {value!r}"
    return seed, None


def steps_cell(value: Any) -> tuple[int, str | None]:
    steps = integer(value)
    if steps is None:
        return DEFAULT_STEPS, None
    if isinstance(steps, Invalid) or not MIN_STEPS <= steps <= MAX_STEPS:
        return DEFAULT_STEPS, f"must be an integer {MIN_STEPS}..{MAX_STEPS}, got {value!r}"
    return steps, None


def aspect_ratio_cell(value: Any) -> tuple[str, str | None]:
    aspect_ratio = text(value) or DEFAULT_ASPECT_RATIO
    if aspect_ratio not in ASPECT_RATIOS:
        known = ", ".join(ASPECT_RATIOS)
        return DEFAULT_ASPECT_RATIO, f"unknown aspect ratio {aspect_ratio!r}; use one of {known}"
    return aspect_ratio, None


def variants_cell(value: Any) -> tuple[int, str | None]:
    """How many images the row asks for (empty: 1) and the problem, if any."""
    variants = integer(value)
    if variants is None:
        return 1, None
    if isinstance(variants, Invalid) or not 1 <= variants <= MAX_VARIANTS:
        return 1, f"must be an integer 1..{MAX_VARIANTS} (or empty for 1), got {value!r}"
    return variants, None


def integer(value: Any) -> int | Invalid | None:
    """None for an empty cell, the integer, or ``INVALID``; ``3.0`` and ``"3.0"`` read as 3."""
    if is_empty(value):
        return None
    if isinstance(value, bool):
        return INVALID
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else INVALID
    cell = str(value).strip()
    if not cell:
        return None
    return int(cell.split(".")[0]) if _INTEGER.fullmatch(cell) else INVALID


def is_empty(value: Any) -> bool:
    """A missing cell: None, NaN or pandas' NA."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def text(value: Any) -> str:
    """The cell as stripped text; an empty cell is ``""``."""
    return "" if is_empty(value) else str(value).strip()


def is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf")

"""Attributes: every prompt table column beyond the known ones, a label of its row.

An attribute is kept as text (a number in a Parquet table becomes its plain text: ``3``,
``2.5``, ``true``); an empty cell means the row does not have it. Its name may not be one a
reader already uses: a lineage column (today's and those the contract adds), or a key that
``metadata.jsonl`` and ``datasets`` give a meaning (``file_name``, ``image``, ``label``,
``partition``). A row's attributes travel as one JSON object string, in column order.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import numpy as np

from flux_pipeline.prompts.cells import is_empty
from flux_pipeline.store.lineage import LINEAGE_COLUMNS

#: The prompt table's own columns: everything else is an attribute.
KNOWN_COLUMNS: Final = ("prompt_id", "prompt", "seed", "steps", "aspect_ratio", "variants")
#: Names an attribute may not take (compared regardless of letter case): every lineage column,
#: including those announced for quality gates and recovery, and the dataset's own keys.
RESERVED: Final = frozenset(
    name.casefold()
    for name in (
        *LINEAGE_COLUMNS,
        "variant",
        "attributes",
        "phash",
        "luma_std",
        "blank",
        "recovered_from",
        "file_name",
        "image",
        "label",
        "partition",
    )
)
#: The header pandas gives a saved index (``to_csv`` without ``index=False``).
_PANDAS_INDEX: Final = re.compile(r"Unnamed: \d+")


def attribute_columns(columns: Sequence[str]) -> list[str]:
    """The attribute columns among ``columns``, in order."""
    known = set(KNOWN_COLUMNS)
    return [c for c in columns if c not in known]


def attribute_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an attribute, or None."""
    if _PANDAS_INDEX.fullmatch(name):
        return (
            "looks like a saved pandas index (an unnamed column): write the table with "
            "to_csv(..., index=False) / to_parquet(..., index=False), or name the column"
        )
    if not name:
        return "an attribute needs a name: the column header is empty"
    if name.casefold() in RESERVED:
        return (
            f"{name!r} is a reserved name (a lineage or dataset column); rename the attribute, "
            f"e.g. to {name + '_label'!r}"
        )
    if name.startswith("__"):
        return f"{name!r}: names starting with '__' are WebDataset's own keys; rename it"
    return None


def attribute_text(value: Any) -> str | None:
    """A cell as attribute text; None when empty (the row lacks the attribute)."""
    if is_empty(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, (dt.date, dt.time)):
        text = value.isoformat()
    elif isinstance(value, Decimal):
        text = format(value.normalize(), "f")
    elif isinstance(value, bytes):
        text = value.decode("utf-8", errors="replace")
    else:
        text = str(value)
    return text.strip() or None


def attributes_json(values: Mapping[str, str | None]) -> str | None:
    """The present attributes as a JSON object string, in order; None when there are none."""
    present = {name: value for name, value in values.items() if value is not None}
    return json.dumps(present, ensure_ascii=False) if present else None

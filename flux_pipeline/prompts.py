"""The prompt table: load, validate (every problem at once), derive seeds, build requests.

Columns: ``prompt_id`` and ``prompt`` (required), ``seed``, ``steps``, ``aspect_ratio``
(optional; empty cells take the defaults). Other columns are ignored. Normalisations, all
documented here: surrounding whitespace is stripped from every cell; an integral float such
as ``3.0`` (or the text ``"3.0"``) is read as the integer ``3``; an empty ``seed`` means
"derive it from ``(prompt_id, partition)``".
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import fsspec
import pandas as pd
import pyarrow.parquet as pq

from flux_pipeline.protocol import (
    ASPECT_RATIOS,
    DEFAULT_ASPECT_RATIO,
    DEFAULT_STEPS,
    MAX_STEPS,
    MIN_STEPS,
    GenerationRequest,
)

REQUIRED_COLUMNS: Final = ("prompt_id", "prompt")
COLUMNS: Final = ("prompt_id", "prompt", "seed", "steps", "aspect_ratio")
#: dtypes of the validated table; ``seed`` is null where it is derived per partition.
DTYPES: Final = {
    "prompt_id": "string",
    "prompt": "string",
    "seed": "Int64",
    "steps": "int64",
    "aspect_ratio": "string",
}
#: Longest prompt accepted, in characters (Flux's text encoder reads about 512 tokens).
MAX_PROMPT_CHARS: Final = 2000
#: Longest prompt id: it becomes part of a file name.
MAX_PROMPT_ID_CHARS: Final = 128
MAX_SEED: Final = 2**63 - 1
#: Letters and digits of any script, ``_``, ``-`` and ``.``; not starting with ``.`` or ``-``.
_SAFE_ID = re.compile(r"[^\W][\w.\-]*")
_INTEGER = re.compile(r"[+-]?\d+(\.0*)?")

SAMPLE_TABLE: Final = "sample_prompts.csv"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the table; ``row`` is the 1-based data row (header excluded)."""

    row: int | None
    prompt_id: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.prompt_id:
            where.append(f"prompt_id {self.prompt_id!r}")
        if self.field:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class PromptTableError(ValueError):
    """The table cannot be used; ``problems`` lists everything found, not just the first."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = [
            f"prompt table {source} has {len(problems)} problem(s) "
            "(rows are numbered from 1, counting data rows only, not the header):",
            *(f"  - {p}" for p in problems),
        ]
        super().__init__("\n".join(lines))


def load_prompt_table(uri: str | None = None) -> pd.DataFrame:
    """Read and validate a CSV or Parquet table (local path or fsspec URI; None = bundled sample).

    Returns a frame with exactly the columns of :data:`DTYPES`; raises
    :class:`PromptTableError` listing every problem found.
    """
    source = uri or f"bundled sample {SAMPLE_TABLE}"
    raw = _read_table(uri, source)
    return _validate(raw, source)


def derive_seed(prompt_id: str, partition: str) -> int:
    """A stable seed in ``0 .. 2**31 - 1`` from ``(prompt_id, partition)``."""
    digest = hashlib.sha256(f"{prompt_id}\x00{partition}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class RangeRequests(Mapping[str, list[GenerationRequest]]):
    """The requests of each partition of a range, made when one is asked for: a month of a
    large table is never held in memory at once. The table's values are read out once, so the
    partitions' requests share their prompt strings."""

    def __init__(self, table: pd.DataFrame, partitions: Sequence[str]) -> None:
        self._rows = _prompt_rows(table)
        self._partitions = list(dict.fromkeys(partitions))

    def __getitem__(self, partition: str) -> list[GenerationRequest]:
        if partition not in self._partitions:
            raise KeyError(partition)
        return _requests(self._rows, partition)

    def __iter__(self) -> Iterator[str]:
        return iter(self._partitions)

    def __len__(self) -> int:
        return len(self._partitions)


def partition_requests(table: pd.DataFrame, partition: str) -> list[GenerationRequest]:
    """One request per row: the pinned seed, or the seed derived for this partition."""
    return _requests(_prompt_rows(table), partition)


#: One row of a validated table as Python values: prompt_id, prompt, pinned seed, steps, ratio.
_PromptRow = tuple[str, str, int | None, int, str]


def _prompt_rows(table: pd.DataFrame) -> list[_PromptRow]:
    return [
        (
            str(row["prompt_id"]),
            str(row["prompt"]),
            None if pd.isna(row["seed"]) else int(row["seed"]),
            int(row["steps"]),
            str(row["aspect_ratio"]),
        )
        for row in table.to_dict("records")
    ]


def _requests(rows: list[_PromptRow], partition: str) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            key=prompt_id,
            prompt=prompt,
            seed=derive_seed(prompt_id, partition) if pinned is None else pinned,
            steps=steps,
            aspect_ratio=aspect_ratio,
        )
        for prompt_id, prompt, pinned, steps, aspect_ratio in rows
    ]


def _read_table(uri: str | None, source: str) -> pd.DataFrame:
    try:
        if uri is None:
            with (resources.files("flux_pipeline") / "data" / SAMPLE_TABLE).open("rb") as f:
                return _read_csv(f)
        with fsspec.open(uri, "rb") as f:
            head = f.read(4)
            f.seek(0)
            lower = uri.lower()
            if lower.endswith((".parquet", ".pq", ".parq")) or head == b"PAR1":
                frame: pd.DataFrame = pq.read_table(f).to_pandas()
                return frame
            return _read_csv(f)
    except FileNotFoundError:
        problem = Problem(None, None, None, "file not found")
    except Exception as exc:  # any reader failure means "not a table we can read"
        problem = Problem(
            None, None, None, f"not a readable CSV or Parquet table ({type(exc).__name__}: {exc})"
        )
    raise PromptTableError(source, [problem])


def _read_csv(f: Any) -> pd.DataFrame:
    return pd.read_csv(
        f,
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        skipinitialspace=True,
        encoding="utf-8",
    )


def _validate(raw: pd.DataFrame, source: str) -> pd.DataFrame:
    raw = raw.rename(columns=lambda c: str(c).strip())
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        found = ", ".join(map(str, raw.columns)) or "none"
        message = f"missing required column(s) {', '.join(missing)} (found: {found})"
        raise PromptTableError(source, [Problem(None, None, None, message)])
    if raw.empty:
        raise PromptTableError(source, [Problem(None, None, None, "the table has no rows")])

    problems: list[Problem] = []
    records = []
    first_row_of: dict[str, int] = {}
    for index, raw_cells in enumerate(raw.to_dict("records"), start=1):
        record, row_problems = _validate_row(index, {str(k): v for k, v in raw_cells.items()})
        problems += row_problems
        prompt_id = record["prompt_id"]
        if prompt_id is not None:
            folded = prompt_id.casefold()
            if folded in first_row_of:
                problems.append(
                    Problem(
                        index,
                        prompt_id,
                        "prompt_id",
                        f"duplicate of row {first_row_of[folded]} (ids must differ by more "
                        "than letter case: they name files)",
                    )
                )
            else:
                first_row_of[folded] = index
        records.append(record)
    if problems:
        raise PromptTableError(source, problems)
    return pd.DataFrame.from_records(records, columns=list(COLUMNS)).astype(DTYPES)


def _validate_row(row: int, cells: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    problems: list[Problem] = []
    prompt_id: str | None = _text(cells.get("prompt_id"))
    shown_id = prompt_id or None

    def bad(field: str, message: str) -> None:
        problems.append(Problem(row, shown_id, field, message))

    id_problem = _prompt_id_problem(shown_id or "")
    if id_problem:
        bad("prompt_id", id_problem)
        prompt_id = None

    prompt = _text(cells.get("prompt"))
    if not prompt:
        bad("prompt", "is empty")
    elif len(prompt) > MAX_PROMPT_CHARS:
        bad("prompt", f"is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}")
    elif any(_is_control(ch) and ch not in "\n\t" for ch in prompt):
        bad("prompt", "contains control characters")

    seed = _integer(cells.get("seed"))
    if isinstance(seed, _Invalid) or (seed is not None and not 0 <= seed <= MAX_SEED):
        bad("seed", f"must be an integer 0..{MAX_SEED} or empty, got {cells.get('seed')!r}")

    steps = _integer(cells.get("steps"))
    if steps is None:
        steps = DEFAULT_STEPS
    elif isinstance(steps, _Invalid) or not MIN_STEPS <= steps <= MAX_STEPS:
        bad("steps", f"must be an integer {MIN_STEPS}..{MAX_STEPS}, got {cells.get('steps')!r}")

    aspect_ratio = _text(cells.get("aspect_ratio")) or DEFAULT_ASPECT_RATIO
    if aspect_ratio not in ASPECT_RATIOS:
        bad(
            "aspect_ratio",
            f"unknown aspect ratio {aspect_ratio!r}; use one of {', '.join(ASPECT_RATIOS)}",
        )
    record = {
        "prompt_id": prompt_id,
        "prompt": prompt,
        "seed": seed,
        "steps": steps,
        "aspect_ratio": aspect_ratio,
    }
    return record, problems


def _prompt_id_problem(prompt_id: str) -> str | None:
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


class _Invalid:
    """Marker for a cell that is present but not an integer."""


_INVALID: Final = _Invalid()


def _integer(value: Any) -> int | _Invalid | None:
    """None for an empty cell, the integer, or ``_INVALID``; ``3.0`` and ``"3.0"`` read as 3."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, bool):
        return _INVALID
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else _INVALID
    text = str(value).strip()
    if not text:
        return None
    return int(text.split(".")[0]) if _INTEGER.fullmatch(text) else _INVALID


def _text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf")

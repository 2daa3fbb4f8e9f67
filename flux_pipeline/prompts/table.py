"""The prompt table: read (CSV, Parquet, or a grid's YAML), validate every row at once, render.

Columns: ``prompt_id`` and ``prompt`` (required); ``seed``, ``steps``, ``aspect_ratio`` and
``variants`` (optional; empty cells take the defaults, see :mod:`.cells`); every other column is
an attribute of its row (:mod:`.attributes`). An empty ``seed`` means "derive it per partition"
(:mod:`.variants`).

Templates are opt-in: a table with at least one attribute column, or a grid
(:mod:`.grid`), has its prompts rendered as Jinja2 templates over their row's attributes
(:mod:`.templates`); a table without attribute columns keeps its prompts verbatim, braces and
all. The rendered text is the prompt: it is what is checked, sent, keyed and stored. A validated
table written by :func:`prompt_table_parquet` says so in its Parquet metadata, so reading it
back never renders a prompt a second time.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from importlib import resources
from typing import Any, Final, Literal

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flux_pipeline.prompts.attributes import (
    attribute_columns,
    attribute_name_problem,
    attribute_text,
)
from flux_pipeline.prompts.cells import (
    MAX_SEED,
    aspect_ratio_cell,
    prompt_id_problem,
    prompt_problem,
    seed_cell,
    steps_cell,
    text,
    variants_cell,
)
from flux_pipeline.prompts.grid import is_grid, read_grid
from flux_pipeline.prompts.problems import Problem, PromptTableError
from flux_pipeline.prompts.templates import PromptTemplates, TemplateProblem
from flux_pipeline.prompts.variants import MAX_PARTITION_IMAGES

REQUIRED_COLUMNS: Final = ("prompt_id", "prompt")
#: The columns every table has had; a table that adds nothing keeps its data version on them.
COLUMNS: Final = ("prompt_id", "prompt", "seed", "steps", "aspect_ratio")
#: dtypes of the validated table's own columns (attributes follow as ``string``); ``seed`` is
#: null where it is derived per partition.
DTYPES: Final = {
    "prompt_id": "string",
    "prompt": "string",
    "seed": "Int64",
    "steps": "int64",
    "aspect_ratio": "string",
    "variants": "int64",
}
SAMPLE_TABLE: Final = "sample_prompts.csv"
#: A small grid shipped beside the sample table (``FLUX_PROMPTS`` does not default to it).
SAMPLE_GRID: Final = "sample_grid.yaml"
#: Parquet metadata marking a validated table: its prompts are already rendered.
_RENDERED: Final = (b"flux_pipeline.prompts", b"rendered")

#: How a table's prompts are read: as templates, verbatim, or already rendered.
_Mode = Literal["table", "grid", "rendered"]


def load_prompt_table(uri: str | None = None) -> pd.DataFrame:
    """Read and validate a CSV or Parquet table or a YAML grid (local path or fsspec URI;
    None = the bundled sample table).

    Returns a frame with the columns of :data:`DTYPES`, then the attribute columns; raises
    :class:`PromptTableError` listing every problem found.
    """
    source = uri or f"bundled sample {SAMPLE_TABLE}"
    raw, mode = _read_table(uri, source)
    return _validate(raw, source, mode)


def prompt_table_parquet(table: pd.DataFrame) -> bytes:
    """A validated table as Parquet bytes, marked as rendered (read back verbatim)."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata(
        {**(arrow.schema.metadata or {}), _RENDERED[0]: _RENDERED[1]}
    )
    buffer = io.BytesIO()
    pq.write_table(arrow, buffer)
    return buffer.getvalue()


def attribute_names(table: pd.DataFrame) -> list[str]:
    """The attribute columns of a validated table, in order."""
    return attribute_columns([str(c) for c in table.columns])


def _read_table(uri: str | None, source: str) -> tuple[pd.DataFrame, _Mode]:
    try:
        if uri is None:
            with (resources.files("flux_pipeline") / "data" / SAMPLE_TABLE).open("rb") as f:
                return _read_csv(f), "table"
        with fsspec.open(uri, "rb") as f:
            if is_grid(uri):
                return read_grid(f.read().decode("utf-8"), source), "grid"
            head = f.read(4)
            f.seek(0)
            lower = uri.lower()
            if lower.endswith((".parquet", ".pq", ".parq")) or head == b"PAR1":
                arrow = pq.read_table(f)
                metadata = arrow.schema.metadata or {}
                rendered = metadata.get(_RENDERED[0]) == _RENDERED[1]
                frame: pd.DataFrame = arrow.to_pandas()
                return frame, "rendered" if rendered else "table"
            return _read_csv(f), "table"
    except PromptTableError:
        raise
    except FileNotFoundError:
        problem = Problem(None, None, None, "file not found")
    except Exception as exc:  # any reader failure means "not a table we can read"
        kind = "YAML grid" if uri and is_grid(uri) else "CSV or Parquet table"
        problem = Problem(None, None, None, f"not a readable {kind} ({type(exc).__name__}: {exc})")
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


def _validate(raw: pd.DataFrame, source: str, mode: _Mode) -> pd.DataFrame:
    raw = raw.rename(columns=lambda c: str(c).strip())
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        found = ", ".join(map(str, raw.columns)) or "none"
        message = f"missing required column(s) {', '.join(missing)} (found: {found})"
        raise PromptTableError(source, [Problem(None, None, None, message)])
    names = attribute_columns([str(c) for c in raw.columns])
    column_problems = [
        Problem(None, None, name, problem)
        for name in names
        if (problem := attribute_name_problem(name)) is not None
    ]
    if column_problems:
        raise PromptTableError(source, column_problems)
    if raw.empty:
        raise PromptTableError(source, [Problem(None, None, None, "the table has no rows")])

    templates = PromptTemplates() if mode == "grid" or (mode == "table" and names) else None
    problems: list[Problem] = []
    records = []
    first_row_of: dict[str, int] = {}
    keyed: dict[tuple[str, int, int, str], tuple[int, str | None]] = {}
    images = 0
    for index, raw_cells in enumerate(raw.to_dict("records"), start=1):
        cells = {str(k): v for k, v in raw_cells.items()}
        record, row_problems = _validate_row(index, cells, names, templates)
        problems += row_problems
        images += record["variants"]
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
        if not row_problems:
            problems += _label_clashes(index, record, names, keyed)
        records.append(record)
    if images > MAX_PARTITION_IMAGES:
        message = (
            f"the table asks for {images:,} images a partition (rows times variants); "
            f"the limit is {MAX_PARTITION_IMAGES:,}"
        )
        problems.append(Problem(None, None, "variants", message))
    if problems:
        raise PromptTableError(source, problems)
    columns = [*DTYPES, *names]
    frame = pd.DataFrame.from_records(records, columns=columns)
    return frame.astype({**DTYPES, **dict.fromkeys(names, "string")})


def _validate_row(
    row: int, cells: dict[str, Any], names: Sequence[str], templates: PromptTemplates | None
) -> tuple[dict[str, Any], list[Problem]]:
    problems: list[Problem] = []
    prompt_id: str | None = text(cells.get("prompt_id"))
    shown_id = prompt_id or None

    def bad(field: str, message: str | None) -> None:
        if message:
            problems.append(Problem(row, shown_id, field, message))

    id_problem = prompt_id_problem(shown_id or "")
    bad("prompt_id", id_problem)
    if id_problem:
        prompt_id = None

    labels = {name: attribute_text(cells.get(name)) for name in names}
    prompt: str | None = text(cells.get("prompt"))
    if templates is not None and prompt:
        try:
            present = {k: v for k, v in labels.items() if v is not None}
            prompt = templates.render(prompt, present)
        except TemplateProblem as exc:
            bad("prompt", str(exc))
            prompt = None
    if prompt is not None:
        bad("prompt", prompt_problem(prompt))

    seed, seed_problem = seed_cell(cells.get("seed"))
    bad("seed", seed_problem)
    steps, steps_problem = steps_cell(cells.get("steps"))
    bad("steps", steps_problem)
    aspect_ratio, ratio_problem = aspect_ratio_cell(cells.get("aspect_ratio"))
    bad("aspect_ratio", ratio_problem)
    variants, variants_problem = variants_cell(cells.get("variants"))
    bad("variants", variants_problem)
    if seed is not None and seed + variants - 1 > MAX_SEED:
        bad("seed", f"seed {seed} + variant {variants - 1} exceeds the largest seed {MAX_SEED}")
    record = {
        "prompt_id": prompt_id,
        "prompt": prompt,
        "seed": seed,
        "steps": steps,
        "aspect_ratio": aspect_ratio,
        "variants": variants,
        **labels,
    }
    return record, problems


def _label_clashes(
    row: int,
    record: dict[str, Any],
    names: Sequence[str],
    keyed: dict[tuple[str, int, int, str], tuple[int, str | None]],
) -> list[Problem]:
    """Rows whose pinned seeds make the same request (one image) with different attributes:
    one image cannot carry two label sets. ``keyed`` holds the requests seen so far."""
    seed = record["seed"]
    if seed is None:  # derived seeds differ by prompt id
        return []
    labels = tuple((n, record[n]) for n in names)
    shown = repr(labels) if names else None
    problems = []
    for variant in range(record["variants"]):
        key = (record["prompt"], seed + variant, record["steps"], record["aspect_ratio"])
        first = keyed.setdefault(key, (row, shown))
        if first[1] != shown:
            problems.append(
                Problem(
                    row,
                    record["prompt_id"],
                    "seed",
                    f"variant {variant} is the same request as row {first[0]} (same prompt, "
                    "seed, steps and aspect ratio) with different attributes: one image cannot "
                    "carry two label sets; change the seed or the prompt",
                )
            )
            break
    return problems

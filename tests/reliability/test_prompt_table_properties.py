"""Property tests: a bad prompt table fails with a clear, located error, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flux_pipeline.prompts import PromptTableError, load_prompt_table
from flux_pipeline.protocol import ASPECT_RATIOS

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

ids = st.from_regex(r"[a-z][a-z0-9_\-]{0,15}", fullmatch=True)
prompts = st.text(
    st.characters(categories=("L", "N", "P", "Zs"), exclude_characters=",\"'"), min_size=1
).filter(lambda s: s.strip() != "")
rows = st.fixed_dictionaries(
    {
        "prompt": prompts.map(lambda s: s.strip()[:200] or "x"),
        "seed": st.one_of(st.just(""), st.integers(0, 2**31).map(str)),
        "steps": st.integers(1, 8).map(str),
        "aspect_ratio": st.sampled_from(sorted(ASPECT_RATIOS)),
    }
)


def tables(min_rows: int = 1, max_rows: int = 12) -> st.SearchStrategy[list[dict[str, str]]]:
    """Valid tables: unique ids, every cell within the contract."""
    return st.lists(ids, min_size=min_rows, max_size=max_rows, unique_by=str.casefold).flatmap(
        lambda keys: st.tuples(*(rows for _ in keys)).map(
            lambda cells: [{"prompt_id": k, **c} for k, c in zip(keys, cells, strict=True)]
        )
    )


#: One defect per field: (field, bad value). Each must be reported on its own row and field.
DEFECTS = [
    ("prompt", ""),
    ("prompt", "   "),
    ("prompt", "x" * 10_000),
    ("steps", "0"),
    ("steps", "9"),
    ("steps", "four"),
    ("steps", "2.5"),
    ("seed", "1.5"),
    ("seed", "abc"),
    ("seed", "-3"),
    ("aspect_ratio", "4:3"),
    ("aspect_ratio", "square"),
    ("prompt_id", "../x"),
    ("prompt_id", "a/b"),
    ("prompt_id", ".hidden"),
    ("prompt_id", "a\\b"),
    ("prompt_id", ""),
]


def write_csv(path: Path, table: list[dict[str, Any]]) -> str:
    pd.DataFrame(table).to_csv(path, index=False)
    return str(path)


@SETTINGS
@given(table=tables(), data=st.data())
def test_every_defect_is_reported_on_its_row_and_field(
    tmp_path: Path, table: list[dict[str, str]], data: st.DataObject
) -> None:
    row = data.draw(st.integers(0, len(table) - 1), label="row")
    field, value = data.draw(st.sampled_from(DEFECTS), label="defect")
    table[row][field] = value
    with pytest.raises(PromptTableError) as caught:
        load_prompt_table(write_csv(tmp_path / "prompts.csv", table))
    located = {(p.row, p.field) for p in caught.value.problems}
    assert (row + 1, field) in located, str(caught.value)
    assert f"row {row + 1}" in str(caught.value)


@SETTINGS
@given(table=tables(min_rows=2), data=st.data())
def test_a_duplicate_id_names_both_rows(
    tmp_path: Path, table: list[dict[str, str]], data: st.DataObject
) -> None:
    first, second = sorted(
        data.draw(st.sets(st.integers(0, len(table) - 1), min_size=2, max_size=2))
    )
    table[second]["prompt_id"] = table[first]["prompt_id"].upper()  # ids differing by case collide
    with pytest.raises(PromptTableError) as caught:
        load_prompt_table(write_csv(tmp_path / "prompts.csv", table))
    duplicate = [p for p in caught.value.problems if p.field == "prompt_id"]
    assert [p.row for p in duplicate] == [second + 1]
    assert f"row {first + 1}" in duplicate[0].message


@SETTINGS
@given(table=tables())
def test_valid_tables_load_unchanged(tmp_path: Path, table: list[dict[str, str]]) -> None:
    frame = load_prompt_table(write_csv(tmp_path / "prompts.csv", table))
    assert list(frame["prompt_id"]) == [r["prompt_id"] for r in table]
    assert list(frame["prompt"]) == [r["prompt"] for r in table]
    assert list(frame["steps"]) == [int(r["steps"]) for r in table]
    assert [None if pd.isna(s) else int(s) for s in frame["seed"]] == [
        int(r["seed"]) if r["seed"] else None for r in table
    ]


@SETTINGS
@given(table=tables(), data=st.data())
def test_parquet_with_typed_bad_cells_is_located(
    tmp_path: Path, table: list[dict[str, str]], data: st.DataObject
) -> None:
    """Parquet keeps types: a float seed or a text step is located like in CSV."""
    row = data.draw(st.integers(0, len(table) - 1), label="row")
    field, bad = data.draw(
        st.sampled_from([("seed", 1.5), ("seed", "seven"), ("steps", "four"), ("steps", 0.5)])
    )
    frame = pd.DataFrame(table).astype(object)
    frame["seed"] = [int(s) if s else None for s in frame["seed"]]
    frame["steps"] = [int(s) for s in frame["steps"]]
    frame = frame.astype(object)
    frame.at[row, field] = bad
    frame[field] = frame[field].astype(str if isinstance(bad, str) else float)
    path = tmp_path / "prompts.parquet"
    frame.to_parquet(path)
    with pytest.raises(PromptTableError) as caught:
        load_prompt_table(str(path))
    assert (row + 1, field) in {(p.row, p.field) for p in caught.value.problems}


@SETTINGS
@given(blob=st.binary(max_size=400))
def test_arbitrary_bytes_never_escape_as_a_library_traceback(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "prompts.csv"
    path.write_bytes(blob)
    error: PromptTableError | None = None
    try:
        frame = load_prompt_table(str(path))
    except PromptTableError as exc:
        error = exc
    if error is not None:
        assert str(error).startswith(f"prompt table {path}")
    else:  # bytes that happen to form a valid table must really be one
        assert len(frame) > 0
        assert frame["prompt"].str.strip().str.len().gt(0).all()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "not a readable CSV or Parquet table"),
        ("prompt_id,prompt\n", "the table has no rows"),
        ("id,text\na,b\n", "missing required column(s) prompt_id, prompt"),
        ("prompt_id\na\n", "missing required column(s) prompt"),
    ],
)
def test_structural_problems_are_named(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "prompts.csv"
    path.write_text(content)
    with pytest.raises(PromptTableError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_prompt_table(str(path))


def test_unicode_ids_are_accepted(tmp_path: Path) -> None:
    table = [{"prompt_id": "café-ñ_01", "prompt": "a bowl of soup"}]
    frame = load_prompt_table(write_csv(tmp_path / "prompts.csv", table))
    assert frame.loc[0, "prompt_id"] == "café-ñ_01"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    table = [
        {"prompt_id": "a", "prompt": "", "steps": "4"},
        {"prompt_id": "b", "prompt": "ok", "steps": "nine"},
        {"prompt_id": "../c", "prompt": "ok", "steps": "4"},
    ]
    with pytest.raises(PromptTableError) as caught:
        load_prompt_table(write_csv(tmp_path / "prompts.csv", table))
    assert {(p.row, p.field) for p in caught.value.problems} == {
        (1, "prompt"),
        (2, "steps"),
        (3, "prompt_id"),
    }

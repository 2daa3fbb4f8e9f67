from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flux_pipeline.prompts import (
    DTYPES,
    MAX_PROMPT_CHARS,
    Problem,
    PromptTableError,
    RangeRequests,
    derive_seed,
    load_prompt_table,
    partition_requests,
)
from flux_pipeline.protocol import ASPECT_RATIOS, DEFAULT_ASPECT_RATIO, DEFAULT_STEPS


def write_csv(tmp_path: Path, text: str, name: str = "prompts.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def problems_of(uri: str) -> list[Problem]:
    with pytest.raises(PromptTableError) as info:
        load_prompt_table(uri)
    return info.value.problems


def test_bundled_sample_is_valid_and_covers_every_aspect_ratio() -> None:
    table = load_prompt_table(None)
    assert 20 <= len(table) <= 30
    assert set(table["aspect_ratio"]) == set(ASPECT_RATIOS)
    assert table["seed"].notna().any()
    assert table["seed"].isna().any()
    assert table["steps"].nunique() > 3
    assert dict(table.dtypes.astype(str)) == {
        "prompt_id": "string",
        "prompt": "string",
        "seed": "Int64",
        "steps": "int64",
        "aspect_ratio": "string",
        "variants": "int64",
    }


def test_defaults_and_normalisations(tmp_path: Path) -> None:
    uri = write_csv(
        tmp_path,
        "prompt_id,prompt,seed,steps,aspect_ratio,notes\n"
        "a, a red fox ,3.0,,,ignored\n"
        "b,a blue whale,,2,16:9,\n"
        "ünï-côdé_9.v2,snow,7,8.0,9:21,\n",
    )
    table = load_prompt_table(uri)
    # "notes" is an attribute of its row (empty = absent); every row asks for one image.
    assert list(table.columns) == [*DTYPES, "notes"]
    assert list(table["notes"].fillna("")) == ["ignored", "", ""]
    assert (table["variants"] == 1).all()
    assert table.drop(columns=["variants", "notes"]).to_dict("records") == [
        {"prompt_id": "a", "prompt": "a red fox", "seed": 3, "steps": DEFAULT_STEPS,
         "aspect_ratio": DEFAULT_ASPECT_RATIO},
        {"prompt_id": "b", "prompt": "a blue whale", "seed": None, "steps": 2,
         "aspect_ratio": "16:9"},
        {"prompt_id": "ünï-côdé_9.v2", "prompt": "snow", "seed": 7, "steps": 8,
         "aspect_ratio": "9:21"},
    ]  # fmt: skip


def test_only_required_columns(tmp_path: Path) -> None:
    table = load_prompt_table(write_csv(tmp_path, "prompt_id,prompt\nx,a cat\n"))
    assert table.loc[0, "steps"] == DEFAULT_STEPS
    assert pd.isna(table.loc[0, "seed"])


def test_every_bad_row_is_reported_at_once_with_row_and_field(tmp_path: Path) -> None:
    long_prompt = "x" * (MAX_PROMPT_CHARS + 1)
    uri = write_csv(
        tmp_path,
        "prompt_id,prompt,seed,steps,aspect_ratio\n"
        "ok,fine,,,\n"  # row 1
        "empty,   ,,,\n"  # row 2
        "s0,p,,0,\n"  # row 3
        "s9,p,,9,\n"  # row 4
        "sfour,p,,four,\n"  # row 5
        "shalf,p,,2.5,\n"  # row 6
        "seedf,p,1.5,,\n"  # row 7
        "seeds,p,abc,,\n"  # row 8
        "ratio,p,,,7:3\n"  # row 9
        "ok,dup,,,\n"  # row 10
        "../x,p,,,\n"  # row 11
        "a/b,p,,,\n"  # row 12
        ".hidden,p,,,\n"  # row 13
        f"{'i' * 200},p,,,\n"  # row 14
        f"long,{long_prompt},,,\n"  # row 15
        ",p,,,\n"  # row 16
        "OK,case dup,,,\n"  # row 17
        "neg,p,-1,,\n",  # row 18
    )
    problems = problems_of(uri)
    found = {(p.row, p.field) for p in problems}
    assert found == {
        (2, "prompt"), (3, "steps"), (4, "steps"), (5, "steps"), (6, "steps"), (7, "seed"),
        (8, "seed"), (9, "aspect_ratio"), (10, "prompt_id"), (11, "prompt_id"),
        (12, "prompt_id"), (13, "prompt_id"), (14, "prompt_id"), (15, "prompt"),
        (16, "prompt_id"), (17, "prompt_id"), (18, "seed"),
    }  # fmt: skip
    by_row = {p.row: p for p in problems}
    assert by_row[5].prompt_id == "sfour"
    assert "'four'" in by_row[5].message
    assert "duplicate of row 1" in by_row[10].message
    assert "7:3" in by_row[9].message
    with pytest.raises(PromptTableError) as info:
        load_prompt_table(uri)
    message = str(info.value)
    assert "17 problem(s)" in message
    assert "counting data rows only" in message
    assert "row 11, prompt_id '../x', field 'prompt_id'" in message
    assert "Traceback" not in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("prompt,seed\na cat,1\n", "missing required column(s) prompt_id"),
        ("prompt_id,prompt\n", "the table has no rows"),
        ("", "not a readable CSV or Parquet table"),
        ('{"prompts": [1, 2]}', "missing required column(s) prompt_id, prompt"),
        ('a,b\n"unterminated\n', "not a readable CSV or Parquet table"),
    ],
)
def test_tables_that_cannot_be_used(tmp_path: Path, content: str, expected: str) -> None:
    [problem] = problems_of(write_csv(tmp_path, content))
    assert expected in problem.message


def test_binary_garbage_and_missing_files(tmp_path: Path) -> None:
    garbage = tmp_path / "image.png"
    garbage.write_bytes(bytes(range(256)) * 8)
    [problem] = problems_of(str(garbage))
    assert "not a readable CSV or Parquet table" in problem.message
    [problem] = problems_of(str(tmp_path / "absent.csv"))
    assert problem.message == "file not found"
    bad_parquet = tmp_path / "t.parquet"
    bad_parquet.write_text("prompt_id,prompt\na,b\n")
    [problem] = problems_of(str(bad_parquet))
    assert "not a readable CSV or Parquet table" in problem.message


def test_parquet_with_typed_columns_is_validated_the_same_way(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "prompt_id": ["a", "b", "c"],
            "prompt": ["one", "two", ""],
            "seed": [1.0, 2.5, None],
            "steps": [4, 4, 12],
        }
    )
    path = tmp_path / "table.data"  # no extension: sniffed by the Parquet magic
    frame.to_parquet(path)
    assert {(p.row, p.field) for p in problems_of(str(path))} == {
        (2, "seed"),
        (3, "prompt"),
        (3, "steps"),
    }
    frame.loc[1, "seed"], frame.loc[2, "prompt"], frame.loc[2, "steps"] = 5.0, "three", 8
    frame.to_parquet(path)
    table = load_prompt_table(str(path))
    assert table["seed"].tolist() == [1, 5, pd.NA]
    assert table["steps"].tolist() == [4, 4, 8]


def test_table_from_s3(s3_env: str, tmp_path: Path) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("prompt-tables")
    fs.pipe_file("prompt-tables/t.csv", b"prompt_id,prompt\nx,a moth\n")
    assert load_prompt_table("s3://prompt-tables/t.csv")["prompt"].tolist() == ["a moth"]


def test_seeds_are_derived_per_partition_unless_pinned(tmp_path: Path) -> None:
    table = load_prompt_table(write_csv(tmp_path, "prompt_id,prompt,seed\na,x,\nb,y,99\n"))
    first = partition_requests(table, "2026-11-20")
    assert first == partition_requests(table, "2026-11-20")
    assert [r.key for r in first] == ["a", "b"]
    assert first[0].seed == derive_seed("a", "2026-11-20")
    assert first[1].seed == 99
    other = partition_requests(table, "2026-11-21")
    assert other[0].seed != first[0].seed
    assert other[1].seed == 99
    assert derive_seed("a", "2026-11-20") == 1254364835  # stable across versions and machines
    assert all(0 <= derive_seed(str(i), "p") < 2**31 for i in range(200))


def test_a_range_makes_each_partition_s_requests_and_they_share_the_prompt_strings(
    tmp_path: Path,
) -> None:
    table = load_prompt_table(write_csv(tmp_path, "prompt_id,prompt,seed\na,x,\nb,y,99\n"))
    days = RangeRequests(table, ["2026-11-20", "2026-11-21"])
    assert list(days) == ["2026-11-20", "2026-11-21"]
    first, second = days["2026-11-20"], days["2026-11-21"]
    assert first == partition_requests(table, "2026-11-20")
    assert second == partition_requests(table, "2026-11-21")
    assert first[0].prompt is second[0].prompt  # read out of the table once, not per partition
    with pytest.raises(KeyError):
        days["2026-11-22"]


cells = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.integers(-5, 12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["../x", "a/b", "four", "1:1", "16:9", " ", "3.0", "ñ"]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "prompt_id": cells,
                "prompt": cells,
                "seed": cells,
                "steps": cells,
                "aspect_ratio": cells,
            }
        ),
        max_size=6,
    )
)
def test_any_table_either_loads_clean_or_fails_with_problems(
    tmp_path: Path, rows: list[dict[str, object]]
) -> None:
    path = tmp_path / "fuzz.parquet"
    pd.DataFrame(rows, columns=["prompt_id", "prompt", "seed", "steps", "aspect_ratio"]).astype(
        object
    ).astype(str).to_parquet(path)
    try:
        table = load_prompt_table(str(path))
    except PromptTableError as exc:
        problems = exc.problems
    else:
        problems = []
        assert len(table) == len(rows)
        assert table["steps"].between(1, 8).all()
        assert set(table["aspect_ratio"]) <= set(ASPECT_RATIOS)
        assert table["prompt_id"].is_unique
    assert all(p.message for p in problems)

"""Every bad table or grid gives its own error, naming the row or template and the field; the
good cases next to them (text scalars, sampling, ids, rendering once)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest

from flux_pipeline.prompts import (
    MAX_SEED,
    Problem,
    PromptTableError,
    load_prompt_table,
    partition_requests,
    prompt_table_parquet,
)


def write(tmp_path: Path, text: str, name: str = "table.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def problems(uri: str) -> list[str]:
    with pytest.raises(PromptTableError) as info:
        load_prompt_table(uri)
    return [str(p) for p in info.value.problems]


def grid(*templates: str) -> str:
    return "templates:\n" + "".join(templates)


PETS = """\
  - id: pets
    prompt: "a {{ style }} {{ animal }}"
    attributes: {style: [ink, oil], animal: [cat, dog]}
"""


# --- tables: templates, attributes, variants ------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "style", "expected"),
    [
        ("a {{ style }} cat", "", "row 1, prompt_id 'a', field 'prompt': 'style' is undefined"),
        (
            "a {{ colour }} cat",
            "ink",
            "row 1, prompt_id 'a', field 'prompt': 'colour' is undefined",
        ),
        ("a {{ style cat", "ink", "row 1, prompt_id 'a', field 'prompt': Jinja2 syntax error"),
        ("{{ style.__class__ }}", "ink", "row 1, prompt_id 'a', field 'prompt': "),
    ],
)
def test_a_template_that_does_not_render_names_the_row_and_field(
    tmp_path: Path, prompt: str, style: str, expected: str
) -> None:
    uri = write(
        tmp_path, f'prompt_id,prompt,style\na,"{prompt}",{style}\nb,fine {{{{ style }}}},x\n'
    )
    (found,) = problems(uri)
    assert found.startswith(expected)


def test_a_row_missing_an_attribute_names_it_and_the_rows_attributes(tmp_path: Path) -> None:
    uri = write(tmp_path, "prompt_id,prompt,style,animal\na,{{ style }} {{ animal }},ink,\n")
    (found,) = problems(uri)
    assert "'animal' is undefined" in found
    assert "the row's attributes: style" in found


@pytest.mark.parametrize(
    ("rendered", "message"),
    [
        ("x", "field 'prompt': is empty"),
        ("x" * 2001, "is 2001 characters long; the limit is 2000"),
        ("bell\x07", "contains control characters"),
    ],
)
def test_a_rendered_prompt_is_checked_as_a_plain_prompt(
    tmp_path: Path, rendered: str, message: str
) -> None:
    template = "{{ style[:0] }}" if rendered == "x" else "{{ style }}"
    frame = pd.DataFrame({"prompt_id": ["a"], "prompt": [template], "style": [rendered]})
    path = tmp_path / "table.parquet"
    frame.to_parquet(path, index=False)
    (found,) = problems(str(path))
    assert found.startswith("row 1, prompt_id 'a', field 'prompt'")
    assert message in found


@pytest.mark.parametrize("value", ["0", "65", "two", "1.5", "-1"])
def test_variants_out_of_range_or_not_an_integer_name_the_row(tmp_path: Path, value: str) -> None:
    uri = write(tmp_path, f"prompt_id,prompt,variants\na,a cat,2\nb,a dog,{value}\n")
    (found,) = problems(uri)
    assert found.startswith("row 2, prompt_id 'b', field 'variants': must be an integer 1..64")


def test_a_pinned_seed_plus_variant_above_the_largest_seed_names_the_row(tmp_path: Path) -> None:
    uri = write(
        tmp_path,
        f"prompt_id,prompt,seed,variants\nok,a cat,{MAX_SEED},1\nbad,a dog,{MAX_SEED - 1},3\n",
    )
    (found,) = problems(uri)
    assert found.startswith("row 2, prompt_id 'bad', field 'seed'")
    assert "exceeds the largest seed" in found


def test_one_request_with_two_label_sets_names_both_rows(tmp_path: Path) -> None:
    uri = write(
        tmp_path,
        "prompt_id,prompt,seed,variants,style\n"
        "a,a cat,10,2,ink\n"
        "b,a cat,11,1,oil\n"  # seed 11 is a's variant 1: one image, two labels
        "c,a cat,20,1,ink\n"
        "d,a cat,20,1,ink\n",  # the same request with the same labels: allowed (one image)
    )
    (found,) = problems(uri)
    assert found.startswith("row 2, prompt_id 'b', field 'seed'")
    assert "same request as row 1" in found


def test_a_partition_of_more_than_a_million_images_is_refused(tmp_path: Path) -> None:
    rows = "".join(f"p{i},prompt {i},64\n" for i in range(15_626))  # 1,000,064 images
    (found,) = problems(write(tmp_path, "prompt_id,prompt,variants\n" + rows))
    assert "field 'variants': the table asks for 1,000,064 images a partition" in found


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ("status", "'status' is a reserved name"),
        ("Label", "'Label' is a reserved name"),
        ("variant", "'variant' is a reserved name"),
        ("phash", "'phash' is a reserved name"),
        ("file_name", "'file_name' is a reserved name"),
        ("Unnamed: 0", "index=False"),
    ],
)
def test_a_reserved_or_index_column_is_an_error_naming_it(
    tmp_path: Path, column: str, message: str
) -> None:
    (found,) = problems(write(tmp_path, f'prompt_id,prompt,"{column}"\na,a cat,x\n'))
    assert found.startswith(f"field '{column}': ")
    assert message in found
    if "reserved" in message:
        assert "rename" in found


def test_two_rows_with_the_same_id_name_both(tmp_path: Path) -> None:
    (found,) = problems(write(tmp_path, "prompt_id,prompt,style\nCat,a,x\ncat,b,y\n"))
    assert found.startswith("row 2, prompt_id 'cat', field 'prompt_id': duplicate of row 1")


def test_a_table_without_attributes_sends_braces_verbatim(tmp_path: Path) -> None:
    table = load_prompt_table(write(tmp_path, "prompt_id,prompt\na,{{ not a template\n"))
    assert table["prompt"].item() == "{{ not a template"


def test_attributes_are_text_and_rendered_prompts_are_never_rendered_again(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "prompt_id": ["a", "b"],
            "prompt": ["{{ size }} {{ word }}", "{{ ratio }}"],
            "size": [3, None],
            "ratio": [2.5, 1.0],
            "word": ["{{ size }}", "plain"],
            "on": [True, False],
        }
    )
    path = tmp_path / "table.parquet"
    frame.to_parquet(path, index=False)
    table = load_prompt_table(str(path))
    assert table["prompt"].tolist() == ["3 {{ size }}", "1"]  # a value is not a template
    assert table["ratio"].tolist() == ["2.5", "1"]
    assert table["on"].tolist() == ["true", "false"]
    assert pd.isna(table["size"][1])
    stored = tmp_path / "validated.parquet"
    stored.write_bytes(prompt_table_parquet(table))
    again = load_prompt_table(str(stored))
    pd.testing.assert_frame_equal(again, table)
    requests = partition_requests(again, "2026-12-01")
    assert (
        requests[0].attributes
        == '{"size": "3", "ratio": "2.5", "word": "{{ size }}", "on": "true"}'
    )
    assert requests[1].attributes == '{"ratio": "1", "word": "plain", "on": "false"}'


# --- grids --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            PETS.replace("{{ animal }}", "{{ colour }}"),
            "template 'pets', field 'prompt': uses {{ colour }}, which is not among its attributes",
        ),
        (
            PETS.replace("{{ animal }}", "{% if %}"),
            "template 'pets', field 'prompt': Jinja2 syntax",
        ),
        (
            PETS.replace("animal: [cat, dog]", "animal: []"),
            "template 'pets', field 'attributes.animal': must be a non-empty list",
        ),
        (PETS + "    sample: 5\n", "template 'pets', field 'sample': must be an integer 1..4"),
        (PETS + "    sample: 0\n", "template 'pets', field 'sample': must be an integer 1..4"),
        (
            PETS + "    variants: 70\n",
            "template 'pets', field 'variants': must be an integer 1..64",
        ),
        (PETS + "    steps: x\n", "template 'pets', field 'steps': must be an integer 1..8"),
        (PETS + "    aspect_ratio: 7:3\n", "template 'pets', field 'aspect_ratio': unknown"),
        (PETS + "    colour: red\n", "template 'pets', field 'colour': unknown key"),
        (
            PETS.replace("style:", "label:"),
            "template 'pets', field 'attributes.label': 'label' is a reserved",
        ),
        (
            PETS.replace("style:", "seed:"),
            "template 'pets', field 'attributes.seed': 'seed' is a prompt table column",
        ),
        (
            PETS.replace("[ink, oil]", "[ink, ink]"),
            "template 'pets', field 'attributes.style': value 'ink' is listed twice",
        ),
        (
            PETS.replace("id: pets", "id: ../pets"),
            "template '../pets', field 'id': '../pets' is not a safe",
        ),
        (
            PETS + PETS.replace("id: pets", "id: PETS"),
            "template 'PETS', field 'id': the same id as template 'pets'",
        ),
    ],
)
def test_a_bad_grid_names_the_template_and_the_field(
    tmp_path: Path, template: str, expected: str
) -> None:
    found = problems(write(tmp_path, grid(template), "grid.yaml"))
    assert any(p.startswith(expected) for p in found), found


def test_a_grid_of_more_than_a_million_rows_needs_a_sample(tmp_path: Path) -> None:
    values = "[" + ", ".join(f"v{i}" for i in range(32)) + "]"
    names = ["a", "b", "c", "d"]
    big = "  - id: big\n    prompt: '{{ a }} {{ b }} {{ c }} {{ d }}'\n    attributes:\n" + "".join(
        f"      {n}: {values}\n" for n in names
    )
    (found,) = problems(write(tmp_path, grid(big), "grid.yaml"))
    assert found.startswith("template 'big', field 'attributes': 1,048,576 combinations exceed")
    sampled = load_prompt_table(write(tmp_path, grid(big + "    sample: 3\n"), "sampled.yaml"))
    assert len(sampled) == 3


def test_every_problem_of_a_grid_is_listed_at_once(tmp_path: Path) -> None:
    bad = PETS.replace("{{ animal }}", "{{ colour }}") + "    variants: 0\n"
    other = PETS.replace("id: pets", "id: more").replace("[ink, oil]", "[]")
    found = problems(write(tmp_path, grid(bad, other), "grid.yaml"))
    assert [p.split(":")[0] for p in found] == [
        "template 'pets', field 'prompt'",
        "template 'pets', field 'variants'",
        "template 'more', field 'attributes.style'",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("templates: [\n", "not valid YAML"),
        ("prompts: []\n", "a grid file is a mapping with the one key 'templates'"),
        ("templates: []\n", "field 'templates': must be a non-empty list"),
    ],
)
def test_a_file_that_is_no_grid_says_so(tmp_path: Path, text: str, expected: str) -> None:
    (found,) = problems(write(tmp_path, text, "grid.yaml"))
    assert expected in found


def test_grid_scalars_stay_text_and_ids_are_readable_then_hashed(tmp_path: Path) -> None:
    text = grid(
        "  - id: t\n    prompt: '{{ a }} {{ b }}'\n"
        "    attributes: {a: ['no', '1.10', 'x/y'], b: [on]}\n"
        "    variants: '2'\n    seed: '7'\n",
        "  - id: t-no\n    prompt: '{{ c }}'\n    attributes: {c: ['on']}\n",
    )
    table = load_prompt_table(write(tmp_path, text, "grid.yaml"))
    assert table["prompt"].tolist() == ["no on", "1.10 on", "x/y on", "on"]
    assert table["a"].tolist()[:3] == ["no", "1.10", "x/y"]
    ids = table["prompt_id"].tolist()
    # "t-no-on" is made by both templates: both take the hashed form; "x/y" is made safe.
    assert ids[1:3] == ["t-1.10-on", "t-x_y-on"]
    assert ids[0].startswith("t-")
    assert len(ids[0]) == 12
    assert ids[3].startswith("t-no-")
    assert len(ids[3]) == 15
    assert ids[0] != ids[3]
    assert table["variants"].tolist() == [2, 2, 2, 1]
    assert table["seed"].tolist()[:3] == [7, 7, 7]
    requests = partition_requests(table, "2026-12-01")
    assert [r.seed for r in requests[:2]] == [7, 8]


def test_a_sample_is_seeded_by_the_template_id_and_the_same_everywhere(tmp_path: Path) -> None:
    values = "[" + ", ".join(str(i) for i in range(10)) + "]"
    text = grid(
        "  - id: s\n    prompt: '{{ x }}-{{ y }}'\n"
        f"    attributes: {{x: {values}, y: {values}}}\n"
        "    sample: 7\n"
    )
    first = load_prompt_table(write(tmp_path, text, "a.yaml"))
    second = load_prompt_table(write(tmp_path, text, "b.yaml"))
    pd.testing.assert_frame_equal(first, second)
    assert len(first) == first["prompt_id"].nunique() == 7
    product = [f"{x}-{y}" for x, y in itertools.product(range(10), range(10))]
    prompts = first["prompt"].tolist()
    assert prompts == sorted(prompts, key=product.index)  # in product order
    renamed = load_prompt_table(write(tmp_path, text.replace("id: s", "id: r"), "c.yaml"))
    assert renamed["prompt"].tolist() != prompts  # another id, another sample


def test_problems_read_as_sentences() -> None:
    problem = Problem(None, None, "sample", "must be an integer", "pets")
    assert str(problem) == "template 'pets', field 'sample': must be an integer"

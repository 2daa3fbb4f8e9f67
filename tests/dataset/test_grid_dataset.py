"""A prompt grid through Dagster on the emulator: variants, attributes as labels, every reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flux_pipeline.commands.cli import main
from flux_pipeline.prompts import derive_seed
from flux_pipeline.store.lineage import read_lineage
from tests.support.designer_support import Designer, check_passed

PARTITION = "2026-12-01"
#: 3 x 2 x 2 combinations, 3 variants each: 36 images; values BaseLoader keeps as text.
GRID = """\
templates:
  - id: pets
    prompt: "a {{ style }} photo of a {{ animal }}, {{ mood }}"
    attributes:
      style: [watercolor, ink, pixel art]
      animal: [cat, dog]
      mood: ["no", "1.10"]
    variants: 3
    steps: 1
"""
ATTRIBUTES = ("style", "animal", "mood")


@pytest.fixture
def grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    monkeypatch.setenv("FLUX_PROMPTS", str(path))
    return path


@pytest.mark.slow  # about 25 s: four Dagster runs, datasets and webdataset loads
def test_a_grid_with_variants_builds_labelled_images_and_a_rebuild_costs_nothing(
    designer: Designer, grid: Path, hf_offline: Path, tmp_path: Path, capsys: Any
) -> None:
    root = str(designer.root)
    # The plan counts images (rows x variants), before anything is built.
    assert (
        main(["plan", "--partition", PARTITION, "--prompts", str(grid), "--root", root, "--json"])
        == 0
    )
    (planned,) = json.loads(capsys.readouterr().out)["partitions"]
    assert (planned["images"], planned["to_submit"]) == (36, 36)

    result = designer.build(PARTITION)
    assert result.success
    assert check_passed(result, "one_row_per_prompt")
    assert designer.submits() == 36

    lineage = read_lineage(designer.store)
    assert len(lineage) == 36
    assert (lineage["status"] == "COMPLETED").all()
    assert (
        lineage.groupby("prompt_id")["variant"].apply(sorted).map(list).eq([[0, 1, 2]] * 12).all()
    )
    assert lineage.groupby("prompt_id")["seed"].nunique().eq(3).all()
    assert lineage["request_key"].is_unique
    # Variant 0 keeps the seed a row without variants would have had.
    first = lineage[lineage["variant"] == 0]
    assert all(first["seed"] == [derive_seed(p, PARTITION) for p in first["prompt_id"]])
    for row in lineage.itertuples():
        labels = json.loads(row.attributes)
        assert list(labels) == list(ATTRIBUTES)
        assert row.prompt == f"a {labels['style']} photo of a {labels['animal']}, {labels['mood']}"
        assert row.prompt_id == "pets-" + "-".join(labels[n].replace(" ", "_") for n in ATTRIBUTES)
    assert set(lineage["attributes"].map(lambda a: json.loads(a)["mood"])) == {"no", "1.10"}

    # datasets shows the attributes as columns, with variant and attributes.
    import datasets

    loaded = datasets.load_dataset(
        "imagefolder", data_dir=str(designer.root / "images"), cache_dir=str(hf_offline)
    )["train"]
    assert {"variant", "attributes", *ATTRIBUTES} <= set(loaded.column_names)
    assert len(loaded) == 36
    by_key = {(r.prompt_id, r.variant): r for r in lineage.itertuples()}
    for record in loaded.remove_columns("image"):
        row = by_key[(record["prompt_id"], record["variant"])]
        assert record["attributes"] == row.attributes
        assert {n: record[n] for n in ATTRIBUTES} == json.loads(row.attributes)

    # WebDataset shards carry them too, read back by webdataset.
    out = tmp_path / "shards"
    assert main(["export", "webdataset", str(out), "--root", root, "-p", PARTITION]) == 0
    import webdataset as wds

    samples = list(wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False))
    assert len(samples) == 36
    for sample in samples:
        meta = json.loads(sample["json"])
        row = by_key[(meta["prompt_id"], meta["variant"])]
        assert meta["attributes"] == row.attributes
        assert {n: meta[n] for n in ATTRIBUTES} == json.loads(row.attributes)

    # A rebuild of the partition asks the API nothing.
    before = designer.api_requests()
    again = designer.build(PARTITION)
    assert again.success
    assert designer.api_requests() == before
    assert len(read_lineage(designer.store)) == 36


def test_an_invalid_grid_fails_prompt_table_and_submits_nothing(
    designer: Designer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.replace("variants: 3", "variants: 65"))
    monkeypatch.setenv("FLUX_PROMPTS", str(path))
    result = designer.build(PARTITION)
    assert not result.success
    failure = result.failure_data_for_node("prompt_table")
    assert failure is not None
    assert "template 'pets', field 'variants'" in str(failure.user_failure_data.description)
    assert designer.api_requests() == 0
    assert not (designer.root / "lineage").exists()

"""Partitions built before variants and attributes existed: same keys, same data version, and a
mixed root that ``datasets`` loads after ``flux-pipeline export imagefolder``."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest

from flux_pipeline.commands.cli import main
from flux_pipeline.store.layout import lineage_path, metadata_path
from flux_pipeline.store.lineage import read_lineage
from tests.support.designer_support import Designer, check_passed

OLD, NEW = "2026-12-01", "2026-12-02"
#: A table of before the change; the braces are no template (no attribute column).
PLAIN = """prompt_id,prompt,seed,steps,aspect_ratio
fox,A red fox in fresh snow,,1,1:1
harbor,Fishing boats in a foggy harbor {{ not a template }},7,1,16:9
tower,A glass tower reflecting storm clouds,,1,9:16
"""
#: What the code before this change asked for in partition OLD (request keys it computed).
KEYS_BEFORE = {
    "fox": "8ef44c9bfdd4d1a363428df2ae7c31e5eddfcc20803c14c6a5b02840f0a6917f",
    "harbor": "3dda45eb21e2ea83fe1e1f95eb354355716b0ef844f142ca1e8b2c64ce3f78cc",
    "tower": "e7fe6879a64b14f6ab81a94bdaa850bf003f9271cf1333e30f3337d8a25e854c",
}
#: ``prompt_table``'s data version of PLAIN before this change.
VERSION_BEFORE = "3c4a749238094861552604e80e225245a2c4dfd5d823c6c5944524085805a3e3"
#: The same rows, with variants and an attribute, and one templated row.
LABELLED = """prompt_id,prompt,seed,steps,aspect_ratio,variants,style
fox,A red fox in fresh snow,,1,1:1,2,photo
harbor,Fishing boats in a foggy harbor {{ '{{' }} not a template }},7,1,16:9,2,
tower,A glass tower reflecting storm clouds,,1,9:16,,photo
kite,A {{ style }} of a kite,,1,1:1,1,sketch
"""


def age(designer: Designer, partition: str) -> None:
    """Rewrite the partition's files as the code before variants wrote them."""
    store = designer.store
    table = pq.read_table(io.BytesIO(store.read_bytes(lineage_path(partition))))
    old = table.drop_columns(["variant", "attributes"])
    buffer = io.BytesIO()
    pq.write_table(old, buffer)
    store.write_atomic(lineage_path(partition), buffer.getvalue())
    lines = store.read_bytes(metadata_path(partition)).decode().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:
        del record["variant"], record["attributes"]
    body = "".join(json.dumps(r) + "\n" for r in records)
    store.write_atomic(metadata_path(partition), body.encode())


def load(designer: Designer, cache: Path, first: str | None = None) -> Any:
    """The root's images folder as datasets loads it; ``first``: the partition whose files it
    reads first (the other one next)."""
    import datasets

    images = designer.root / "images"
    if first is None:
        return datasets.load_dataset("imagefolder", data_dir=str(images), cache_dir=str(cache))[
            "train"
        ].remove_columns("image")
    order = sorted((OLD, NEW), key=lambda key: key != first)
    files = [str(images / f"partition={key}" / "*") for key in order]
    return datasets.load_dataset("imagefolder", data_files=files, cache_dir=str(cache))[
        "train"
    ].remove_columns("image")


def labels_of(attributes: Any) -> dict[str, str] | None:
    """A lineage ``attributes`` cell as a dict; None when null (pandas reads it as NaN)."""
    return json.loads(attributes) if isinstance(attributes, str) else None


def labels_load(designer: Designer, cache: Path, first: str | None = None) -> bool:
    """Whether ``datasets`` loads every row of the root with its variant and its labels."""
    try:
        loaded = load(designer, cache, first)
    except Exception:  # datasets refuses metadata files whose keys differ
        return False
    expected = read_lineage(designer.store)
    labels = {
        (r.partition, r.prompt_id, r.variant): json.loads(
            r.attributes if isinstance(r.attributes, str) else "{}"
        ).get("style")
        for r in expected.itertuples()
    }
    if "style" not in loaded.column_names or len(loaded) != len(labels):
        return False
    found = {
        (str(r["partition"])[:10], r["prompt_id"], r["variant"]): r["style"] or None for r in loaded
    }
    return found == labels


@pytest.mark.slow  # about 25 s: four Dagster runs, datasets and webdataset loads
def test_old_partitions_keep_their_keys_and_a_mixed_root_loads_after_export(
    designer: Designer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hf_offline: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    plain, labelled = tmp_path / "plain.csv", tmp_path / "labelled.csv"
    plain.write_text(PLAIN)
    labelled.write_text(LABELLED)
    monkeypatch.setenv("FLUX_PROMPTS", str(plain))
    result = designer.build(OLD)
    assert result.success
    # The table without the new columns keeps the data version it had: OLD stays in sync.
    tables = designer.instance.get_latest_materialization_event(dg.AssetKey("prompt_table"))
    assert tables is not None
    assert tables.asset_materialization is not None
    assert tables.asset_materialization.tags["dagster/data_version"] == VERSION_BEFORE
    built = read_lineage(designer.store)
    assert dict(zip(built["prompt_id"], built["request_key"], strict=True)) == KEYS_BEFORE
    assert list(built["variant"]) == [0, 0, 0]
    assert built["attributes"].isna().all()
    age(designer, OLD)
    assert list(read_lineage(designer.store)["variant"]) == [0, 0, 0]  # read as variant 0

    # A partition from a table with variants and attributes, beside the old one.
    monkeypatch.setenv("FLUX_PROMPTS", str(labelled))
    with caplog.at_level(logging.WARNING, logger="flux_pipeline.builder.finishing"):
        assert designer.build(NEW).success
    assert f"partition {NEW}: its metadata.jsonl keys differ from partition {OLD}'s" in caplog.text
    assert f"flux-pipeline export imagefolder -p {OLD}...{NEW}" in caplog.text
    new = read_lineage(designer.store)
    new = new[new["partition"] == NEW]
    assert len(new) == 6
    harbor = new[new["prompt_id"] == "harbor"]
    assert set(harbor["prompt"]) == {"Fishing boats in a foggy harbor {{ not a template }}"}
    assert new[new["prompt_id"] == "kite"]["prompt"].item() == "A sketch of a kite"

    # Before the export, datasets cannot load the root whole: depending on which file it reads
    # first it fails, drops the new columns, or leaves the old rows without a variant. After it,
    # the root loads whichever file it reads first (both orders are tried).
    assert not labels_load(designer, hf_offline / "old-first", first=OLD)
    assert not labels_load(designer, hf_offline / "new-first", first=NEW)
    export = ["export", "imagefolder", "--root", str(designer.root), "-p", f"{OLD}...{NEW}"]
    assert main(export) == 0
    assert labels_load(designer, tmp_path / "cache-old-first", first=OLD)
    assert labels_load(designer, tmp_path / "cache-new-first", first=NEW)
    loaded = load(designer, tmp_path / "cache-3")
    rows = {(str(r["partition"])[:10], r["prompt_id"], r["variant"]): r for r in loaded}
    assert len(rows) == 3 + 6
    # An attribute a row lacks is an empty text, its attributes "{}": never null, which
    # datasets cannot type when a whole file has it.
    assert rows[(OLD, "fox", 0)]["style"] == ""
    assert rows[(OLD, "fox", 0)]["attributes"] == "{}"
    assert rows[(NEW, "fox", 1)]["style"] == "photo"
    assert rows[(NEW, "harbor", 0)]["style"] == ""
    assert json.loads(rows[(NEW, "kite", 0)]["attributes"]) == {"style": "sketch"}

    # Rebuilt from the labelled table, the old partition keeps its images: variant 0 of each
    # old prompt has its request key, reused, never submitted again.
    monkeypatch.setenv("FLUX_PROMPTS", str(labelled))
    rebuilt = designer.build(OLD, table=False)
    assert rebuilt.success
    assert check_passed(rebuilt, "one_row_per_prompt")
    again = read_lineage(designer.store)
    again = again[(again["partition"] == OLD) & (again["variant"] == 0)]
    kept = again[again["prompt_id"].isin(list(KEYS_BEFORE))]
    assert dict(zip(kept["prompt_id"], kept["request_key"], strict=True)) == KEYS_BEFORE
    submits = designer.emulator.stats()["jobs"]["by_request_key"]
    assert all(submits[key] == 1 for key in KEYS_BEFORE.values())
    assert kept["attributes"].map(labels_of).tolist() == [
        {"style": "photo"},
        None,
        {"style": "photo"},
    ]

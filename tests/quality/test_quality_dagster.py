"""Quality gates through Dagster against the emulator's blank and duplicate knobs: flagged rows,
the two checks, attribute_metrics, exports with and without --include-flagged, concurrent runs,
and a partition built before the quality columns rebuilt with no API call."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import imagehash
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flux_pipeline.assets import (
    attribute_metrics,
    generated_images,
    generated_images_checks,
    generation_metrics,
    near_duplicates,
    prompt_table,
)
from flux_pipeline.commands.cli import main as cli
from flux_pipeline.store.layout import lineage_path
from flux_pipeline.store.ledger import Ledger
from flux_pipeline.store.lineage import LINEAGE_SCHEMA
from flux_pipeline.store.provenance import service_backend
from flux_pipeline.store.storage import ObjectStore
from tests.support import forked_cli
from tests.support.dagster_support import KEY, make_resources

DAY, NEXT = "2026-11-20", "2026-11-21"
DAGSTER = Path(sys.executable).with_name("dagster")
#: Twelve one-step prompts of one aspect ratio (a duplicate repeats a picture of the same
#: ratio), labelled by an attribute column `style`.
TABLE = "prompt_id,prompt,steps,aspect_ratio,style\n" + "".join(
    f"p{n:02d},a study of shape number {n},1,1:1,{'ink' if n % 2 else 'oil'}\n" for n in range(12)
)
ASSETS = [
    prompt_table,
    generated_images,
    near_duplicates,
    generation_metrics,
    attribute_metrics,
    *generated_images_checks,
]


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    table = tmp_path / "prompts.csv"
    table.write_text(TABLE)
    monkeypatch.setenv("FLUX_PROMPTS", str(table))
    return tmp_path / "data"


@pytest.fixture
def hf_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return cache


def _materialize(
    emulator: Any, root: Path, instance: dg.DagsterInstance, partition: str | None = DAY, **kw: Any
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ASSETS,
        partition_key=partition,
        resources=make_resources(emulator.url, str(root)),
        instance=instance,
        raise_on_error=False,
        **kw,
    )


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    evaluations = [
        event.event_specific_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    return {e.check_name: e for e in evaluations}


def _lineage(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / "lineage")


def _export(root: Path, out: Path, *flags: str) -> dict[str, Any]:
    assert cli(["export", "webdataset", str(out), "--root", str(root), *flags]) == 0
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return manifest


@pytest.mark.slow
def test_blank_and_duplicate_images_are_flagged_checked_counted_and_left_out_of_exports(
    emulator_factory: Callable[..., Any],
    root: Path,
    tmp_path: Path,
    hf_offline: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # One worker: jobs run one after another, so a duplicate always has an earlier picture.
    emulator = emulator_factory(
        api_keys=(KEY,), workers=1, step_time=0.0, blank_rate=0.25, duplicate_rate=0.3, seed=17
    )
    with dg.instance_for_test() as instance:
        result = _materialize(emulator, root, instance)
    assert result.success
    served = emulator.stats()["jobs"]
    assert served["blank"] >= 2
    assert served["duplicate"] >= 2

    lineage = _lineage(root)
    assert set(lineage["status"]) == {"COMPLETED"}  # flagged rows stay COMPLETED
    blank = lineage[lineage["blank"]]
    assert len(blank) == served["blank"]
    assert (blank["luma_std"] < 2.0).all()
    assert (lineage.loc[~lineage["blank"], "luma_std"] > 2.0).all()
    assert lineage["phash"].str.fullmatch(r"[0-9a-f]{16}").all()

    flags = pq.read_table(root / "quality" / "near_duplicates.parquet").to_pandas()
    assert list(flags.columns) == ["image_uri", "partition", "near_duplicate_of", "distance"]
    assert len(flags) == served["duplicate"]  # one flag per duplicate answer, none by chance
    assert (flags["distance"] <= 4).all()
    for flag in flags.itertuples():  # the stored files agree, hashed in full by imagehash
        ours, original = (
            imagehash.phash(Image.open(p)) for p in (flag.image_uri, flag.near_duplicate_of)
        )
        assert ours - original <= 2
        assert Path(flag.image_uri).read_bytes() != Path(flag.near_duplicate_of).read_bytes()

    checks = _checks(result)
    quality = checks["images_pass_quality"]
    assert not quality.passed
    assert quality.severity == dg.AssetCheckSeverity.WARN
    assert quality.metadata["blank_share"].value == round(len(blank) / 12, 4)
    rate = checks["near_duplicate_rate_below_threshold"]
    assert not rate.passed
    assert rate.metadata["partition_shares"].value == {DAY: round(len(flags) / 12, 4)}

    partition = result.asset_materializations_for_node("generated_images")[0]
    assert partition.metadata["blank"].value == len(blank)
    observed = [
        e.event_specific_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert [(o.partition, o.metadata["near_duplicates"].value) for o in observed] == [
        (DAY, len(flags))
    ]
    metrics = pd.read_parquet(root / "metrics" / "generation_metrics.parquet")
    assert metrics[["blank", "near_duplicates"]].values.tolist() == [[len(blank), len(flags)]]

    by_label = pd.read_parquet(root / "metrics" / "attribute_metrics.parquet")
    lineage["style"] = lineage["attributes"].map(lambda text: json.loads(text)["style"])
    lineage["flagged"] = lineage["image_uri"].isin(flags["image_uri"])
    for style in ("ink", "oil"):
        row = by_label[(by_label["attribute"] == "style") & (by_label["value"] == style)].iloc[0]
        mine = lineage[lineage["style"] == style]
        assert (row["partition"], row["images"], row["failed"]) == (DAY, 6, 0)
        assert row["blank"] == mine["blank"].sum()
        assert row["near_duplicates"] == mine["flagged"].sum()
        assert row["cost"] == pytest.approx(mine["cost"].sum())
    assert by_label["blank"].sum() == len(blank)

    left_out = {"blank": len(blank), "near_duplicate": len(flags)}
    clean = _export(root, tmp_path / "clean")
    assert clean["flagged_skipped"] == left_out
    assert clean["samples"] == 12 - len(blank) - len(flags)
    assert "--include-flagged exports them too" in capsys.readouterr().out
    everything = _export(root, tmp_path / "all", "--include-flagged")
    assert (everything["samples"], everything["flagged_skipped"]) == (12, {})

    import datasets

    def load() -> Any:
        return datasets.load_dataset(
            "imagefolder", data_dir=str(root / "images"), cache_dir=str(hf_offline)
        )["train"]

    built = load()  # the build lists every image, each with its `blank`
    assert sorted(built["blank"]) == sorted(lineage["blank"])
    assert cli(["export", "imagefolder", "--root", str(root)]) == 0
    cleaned = load()
    assert len(cleaned) == 12 - len(blank) - len(flags)
    assert not any(cleaned["blank"])
    assert cli(["export", "imagefolder", "--root", str(root), "--include-flagged"]) == 0
    assert len(load()) == 12


@pytest.mark.slow
def test_two_concurrent_runs_storing_near_identical_images_give_one_flagged_row(
    emulator_factory: Callable[..., Any], root: Path, tmp_path: Path
) -> None:
    """Two `dagster asset materialize` processes, started together, each build a partition
    whose image the emulator makes near-identical (the second job repeats the first's picture)
    and refresh near_duplicates."""
    emulator = emulator_factory(api_keys=(KEY,), workers=1, step_time=0.05, duplicate_rate=1.0)
    (root.parent / "prompts.csv").write_text(
        "prompt_id,prompt,steps,aspect_ratio\nonly,a lone lighthouse,1,1:1\n"
    )
    with dg.instance_for_test() as instance:
        table = _materialize(emulator, root, instance, None, selection=["prompt_table"])
        assert table.success
    env = {
        **os.environ,
        "FLUX_STORAGE_ROOT": str(root),
        "SEGMIND_API_KEY": KEY,
        "SEGMIND_BASE_URL": emulator.url,
    }

    def start(partition: str) -> forked_cli.Command:
        home = tmp_path / f"home-{partition}"
        home.mkdir()
        return forked_cli.start(
            [
                *(str(DAGSTER), "asset", "materialize", "-m", "flux_pipeline.definitions"),
                *("--select", "generated_images,near_duplicates", "--partition", partition),
            ],
            env={**env, "DAGSTER_HOME": str(home)},
            output=tmp_path / f"run-{partition}.log",
        )

    runs = [start(NEXT), start(DAY)]
    for run in runs:
        output = run.communicate(timeout=240)[0]
        assert run.returncode == 0, output[-3000:]
    assert emulator.stats()["jobs"]["duplicate"] == 1
    flags = pq.read_table(root / "quality" / "near_duplicates.parquet").to_pylist()
    lineage = _lineage(root).set_index("partition")
    # Whichever run finished first, the later partition's image is the flagged one.
    assert flags == [
        {
            "image_uri": lineage.loc[NEXT, "image_uri"],
            "partition": NEXT,
            "near_duplicate_of": lineage.loc[DAY, "image_uri"],
            "distance": flags[0]["distance"],
        }
    ]
    assert flags[0]["distance"] <= 2


def test_a_partition_built_before_the_quality_columns_gets_them_on_rebuild_with_no_request(
    emulator_factory: Callable[..., Any], root: Path
) -> None:
    emulator = emulator_factory(api_keys=(KEY,), workers=4, step_time=0.0, blank_rate=0.25, seed=3)
    with dg.instance_for_test() as instance:
        assert _materialize(
            emulator, root, instance, selection=["prompt_table", "generated_images"]
        ).success
        built = _lineage(root)
        store = ObjectStore.from_uri(str(root))
        _forget_quality_columns(store, service_backend(emulator.url))
        before = emulator.stats()["requests"]
        rebuilt = _materialize(emulator, root, instance)
    assert rebuilt.success
    assert emulator.stats()["requests"] == before  # no API call of any kind
    again = _lineage(root)
    columns = ["prompt_id", "phash", "luma_std", "blank", "image_sha256", "request_id"]
    assert again[columns].equals(built[columns])
    assert again["blank"].sum() >= 1
    assert _checks(rebuilt)["images_pass_quality"].metadata["completed"].value == 12


def _forget_quality_columns(store: ObjectStore, backend: str) -> None:
    """Make the partition and its ledger entries look written before the quality columns."""
    path = lineage_path(DAY)
    table = pq.read_table(io.BytesIO(store.read_bytes(path)))
    older = table.drop_columns(["phash", "luma_std", "blank"])
    assert older.schema.names == [
        n for n in LINEAGE_SCHEMA.names if n not in ("phash", "luma_std", "blank")
    ]
    buffer = io.BytesIO()
    pq.write_table(older, buffer)
    store.write_atomic(path, buffer.getvalue())
    ledger = Ledger(store, backend)
    entries = ledger.get_many(table["request_key"].to_pylist())
    assert len(entries) == table.num_rows
    for entry in entries.values():
        assert entry.lineage is not None
        assert entry.lineage.phash is not None
        row = replace(entry.lineage, phash=None, luma_std=None, blank=None)
        ledger.record_finished(entry.request_key, row, entry.image_path, entry.generated_for)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLUX_BLANK_LUMA_STD", "300"),
        ("FLUX_NEAR_DUPLICATE_BITS", "x"),
        ("FLUX_MAX_FLAGGED_RATE", "2"),
    ],
)
def test_a_bad_quality_setting_fails_the_run_before_any_request(
    emulator_factory: Callable[..., Any],
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
) -> None:
    emulator = emulator_factory(api_keys=(KEY,), workers=1, step_time=0.0)
    monkeypatch.setenv(name, value)
    with dg.instance_for_test() as instance:
        result = _materialize(emulator, root, instance)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "generated_images"
    assert name in str(failure.event_specific_data.error.message)
    assert sum(emulator.stats()["requests"].values()) == 0

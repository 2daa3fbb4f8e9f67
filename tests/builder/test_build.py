"""``build_partition`` against the emulator over real HTTP, on local storage and on moto S3."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
import httpx
import pandas as pd
import pytest

from flux_pipeline.builder import BuildProgress, BuildReport, build_partition
from flux_pipeline.builder.outcomes import Outcome, prompt_rows
from flux_pipeline.prompts import load_prompt_table, partition_requests
from flux_pipeline.protocol import ASPECT_RATIOS, MODEL, GenerationRequest
from flux_pipeline.segmind import AuthenticationError, EngineConfig
from flux_pipeline.store.layout import image_path
from flux_pipeline.store.ledger import Ledger
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.provenance import image_id, service_backend
from flux_pipeline.store.storage import ObjectStore, WriteRetry
from tests.support.loopback import TEST_KEY, fast_config
from tests.support.rows import BACKEND, make_row

DAY = "2026-11-20"
TABLE = """prompt_id,prompt,seed,steps,aspect_ratio
fox,a red fox in snow,,2,1:1
whale,a humpback whale breaching,11,1,16:9
tower,a spiral library tower,,3,9:21
twin,a humpback whale breaching,11,1,16:9
blocked,something nsfw,,1,1:1
"""


def config(emu: Any, **overrides: Any) -> EngineConfig:
    return fast_config(emu.url, **overrides)


def requests_of(tmp_path: Path, partition: str = DAY) -> list[GenerationRequest]:
    path = tmp_path / "table.csv"
    path.write_text(TABLE)
    return partition_requests(load_prompt_table(str(path)), partition)


def submits(emu: Any) -> int:
    return int(emu.stats()["requests"]["submit"])


def api_calls(emu: Any) -> int:
    return sum(emu.stats()["requests"].values())


def build(
    requests: list[GenerationRequest], store: ObjectStore, emu: Any, partition: str = DAY, **kw: Any
) -> BuildReport:
    return build_partition(
        requests, partition=partition, store=store, engine_config=config(emu), **kw
    )


def lineage_of(store: ObjectStore, partition: str = DAY) -> pd.DataFrame:
    frame = read_lineage(store)
    return frame[frame["partition"] == partition].set_index("prompt_id")


def assert_images_match_lineage(store: ObjectStore, lineage: pd.DataFrame) -> None:
    for prompt_id, row in lineage[lineage["status"] == "COMPLETED"].iterrows():
        with fsspec.open(row["image_uri"], "rb") as f:
            data = f.read()
        assert hashlib.sha256(data).hexdigest() == row["image_sha256"]
        assert len(data) == row["image_bytes"]
        assert (row["width"], row["height"]) == ASPECT_RATIOS[row["aspect_ratio"]]
        name = f"{prompt_id}-{image_id(row['backend'], row['request_key'])}.jpg"
        assert row["image_uri"] == store.uri(f"images/partition={row['partition']}/{name}")


def test_full_partition_then_rerun_makes_no_api_call(
    emulator: Any, local_store: ObjectStore, tmp_path: Path
) -> None:
    requests = requests_of(tmp_path)
    seen: list[BuildProgress] = []
    report = build(requests, local_store, emulator, progress=seen.append)

    assert (report.total, report.completed, report.failed) == (5, 4, 1)
    # "twin" shares whale's request key: copied, not requested, and not cached (same partition)
    assert (report.cached, report.reused) == (0, 0)
    assert submits(emulator) == 4
    by_key = emulator.stats()["jobs"]["by_request_key"]
    assert sorted(by_key.values()) == [1, 1, 1, 1]
    assert report.api_requests > 0
    assert report.lineage_uri == local_store.uri(f"lineage/partition={DAY}/lineage.parquet")
    assert seen[-1] == replace(seen[-1], done=5, total=5, failed=1, cached=0)

    lineage = lineage_of(local_store)
    assert sorted(lineage.index) == ["blocked", "fox", "tower", "twin", "whale"]
    assert_images_match_lineage(local_store, lineage)
    blocked = lineage.loc["blocked"]
    assert blocked["status"] == "FAILED"
    assert "NSFW" in blocked["error"]
    assert pd.isna(blocked["image_uri"])
    whale, twin = lineage.loc["whale"], lineage.loc["twin"]
    assert twin["request_id"] == whale["request_id"]
    assert twin["image_sha256"] == whale["image_sha256"]
    assert twin["inference_time"] == whale["inference_time"]
    assert not lineage["cached"].any()
    assert (lineage["model"] == MODEL).all()
    assert (lineage["completed_at"] >= lineage["submitted_at"]).all()
    images = [p for p in local_store.list(f"images/partition={DAY}") if p.endswith(".jpg")]
    backend = service_backend(emulator.url)
    assert images == sorted(
        image_path(DAY, r, "jpg", backend) for r in requests if r.key != "blocked"
    )

    for path in Path(local_store.root).rglob("*"):
        assert not path.is_file() or TEST_KEY.encode() not in path.read_bytes(), path

    calls = api_calls(emulator)
    again = build(requests, local_store, emulator)
    assert api_calls(emulator) == calls
    assert (again.api_requests, again.reused, again.completed, again.failed) == (0, 5, 4, 1)
    assert again.cached == 0  # rebuilt from its own images: rows exactly as generated
    rebuilt = lineage_of(local_store)
    pd.testing.assert_frame_equal(rebuilt, lineage)


def test_a_second_partition_reuses_and_copies_pinned_images(
    emulator: Any, local_store: ObjectStore, tmp_path: Path
) -> None:
    build(requests_of(tmp_path), local_store, emulator)
    before = submits(emulator)
    report = build(requests_of(tmp_path, "2026-11-21"), local_store, emulator, "2026-11-21")

    # fox, tower and blocked derive new seeds for the new day; whale and twin pin seed 11
    assert submits(emulator) == before + 3
    assert report.cached == 2
    day2 = lineage_of(local_store, "2026-11-21")
    assert bool(day2.loc["whale", "cached"])
    assert day2.loc["whale", "request_id"] == lineage_of(local_store).loc["whale", "request_id"]
    assert day2.loc["whale", "image_uri"].startswith(local_store.uri("images/partition=2026-11-21"))
    assert_images_match_lineage(local_store, day2)
    assert len(read_lineage(local_store)) == 10


def test_a_partition_keeps_reusing_its_copies_when_the_original_partition_is_deleted(
    emulator: Any, local_store: ObjectStore, tmp_path: Path
) -> None:
    """Retention drops the partition that generated the pinned images: the later partition
    (and any after it) reuses its own copies instead of paying again."""
    build(requests_of(tmp_path), local_store, emulator)
    build(requests_of(tmp_path, "2026-11-21"), local_store, emulator, "2026-11-21")
    before = submits(emulator)
    local_store.fs.rm(local_store.path(f"images/partition={DAY}"), recursive=True)

    again = build(requests_of(tmp_path, "2026-11-21"), local_store, emulator, "2026-11-21")
    later = build(requests_of(tmp_path, "2026-11-22"), local_store, emulator, "2026-11-22")

    assert again.reused == 5  # every row of 2026-11-21 came from its own folder
    assert again.cached == 2  # whale and twin were generated for 2026-11-20
    assert submits(emulator) == before + 3  # only 2026-11-22's three derived-seed prompts
    assert later.cached == 2  # whale and twin, copied from 2026-11-21's surviving copies
    assert_images_match_lineage(local_store, lineage_of(local_store, "2026-11-22"))


def test_resume_attaches_to_a_recorded_request_id(emulator: Any, local_store: ObjectStore) -> None:
    request = GenerationRequest(key="moth", prompt="a luna moth on bark", seed=5, steps=1)
    answer = httpx.post(
        f"{emulator.url}/v2/{MODEL}", json=request.payload(), headers={"x-api-key": TEST_KEY}
    )
    request_id = answer.json()["request_id"]
    submitted_at = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)
    Ledger(local_store, service_backend(emulator.url)).record_submitted(
        request.request_key, request_id, submitted_at
    )

    report = build([request], local_store, emulator)
    assert submits(emulator) == 1  # only ours above: the build attached instead of submitting
    assert report.engine.attached == 1
    row = lineage_of(local_store).loc["moth"]
    assert row["request_id"] == request_id
    assert row["status"] == "COMPLETED"
    assert row["submitted_at"] == submitted_at  # the earlier run's submit, from the ledger
    entry = Ledger(local_store, service_backend(emulator.url)).get(request.request_key)
    assert entry is not None
    assert (entry.state, entry.request_id) == ("COMPLETED", request_id)


def test_auth_errors_propagate_and_write_no_lineage(
    emulator: Any, local_store: ObjectStore, tmp_path: Path
) -> None:
    wrong = config(emulator).replace(api_key="SG_ffffffffffffffff")
    with pytest.raises(AuthenticationError) as info:
        build_partition(
            requests_of(tmp_path), partition=DAY, store=local_store, engine_config=wrong
        )
    assert "SG_ffffffffffffffff" not in str(info.value)
    assert local_store.list("lineage") == []


def test_a_failing_image_write_leaves_no_lineage_and_the_rerun_attaches(
    emulator: Any, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    store = ObjectStore.from_uri(str(root))
    store.retry = WriteRetry(attempts=2, base=0.001, cap=0.001)
    requests = requests_of(tmp_path)
    (root / "images").mkdir()
    (root / "images" / f"partition={DAY}").write_bytes(b"not a folder")

    with pytest.raises(OSError, match="could not write"):
        build(requests, store, emulator)
    assert store.list("lineage") == []
    assert store.list("images") == [f"images/partition={DAY}"]
    paid = submits(emulator)
    keys = {r.request_key for r in requests}
    recorded = Ledger(store, service_backend(emulator.url)).get_many(keys)
    assert all(e.state in ("SUBMITTED", "FAILED") for e in recorded.values())

    (root / "images" / f"partition={DAY}").unlink()
    report = build(requests, store, emulator)
    assert report.completed == 4
    assert submits(emulator) == paid + len(keys) - len(recorded)
    assert report.engine.attached == sum(e.state == "SUBMITTED" for e in recorded.values())
    assert_images_match_lineage(store, lineage_of(store))


def test_build_on_s3(emulator: Any, s3_store: ObjectStore, tmp_path: Path) -> None:
    report = build(requests_of(tmp_path), s3_store, emulator)
    assert report.completed == 4
    assert report.images_prefix_uri.startswith("s3://")
    lineage = lineage_of(s3_store)
    assert lineage["image_uri"].dropna().str.startswith("s3://").all()
    assert_images_match_lineage(s3_store, lineage)
    calls = api_calls(emulator)
    assert build(requests_of(tmp_path), s3_store, emulator).reused == 5
    assert api_calls(emulator) == calls
    assert s3_store.list("_tmp") == []


@pytest.mark.parametrize("recorded", [True, False])
def test_an_expired_ledger_id_is_recovered_from_the_record_or_submitted_once(
    emulator_factory: Any, local_store: ObjectStore, recorded: bool
) -> None:
    """Past its retention, the account's record still has the job (recovered, not paid again);
    a record that forgot it too leads to exactly one new submit."""
    history = None if recorded else 0.2
    emu = emulator_factory(workers=4, step_time=0.01, retention=0.3, history_retention=history)
    request = GenerationRequest(key="owl", prompt="a snowy owl at night", seed=9, steps=1)
    answer = httpx.post(
        f"{emu.url}/v2/{MODEL}", json=request.payload(), headers={"x-api-key": TEST_KEY}
    )
    old_id = answer.json()["request_id"]
    Ledger(local_store, service_backend(emu.url)).record_submitted(request.request_key, old_id)
    status_url = f"{emu.url}/v2/requests/{old_id}/status"
    for _ in range(100):  # retention is 0.3 s: wait until the emulator forgot the job
        if httpx.get(status_url, headers={"x-api-key": TEST_KEY}).status_code == 404:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"{old_id} never expired")

    report = build([request], local_store, emu)
    row = lineage_of(local_store).loc["owl"]
    assert row["status"] == "COMPLETED"
    if recorded:
        assert submits(emu) == 1  # ours above only: the image came from the record
        assert (report.engine.recovered, report.engine.expired) == (1, 0)
        assert row["request_id"] == old_id
        assert row["recovered_from"] == "history"
    else:
        assert submits(emu) == 2  # ours above, then exactly one fresh submit
        assert report.engine.expired == 1
        assert row["request_id"] != old_id
        assert pd.isna(row["recovered_from"])
    entry = Ledger(local_store, service_backend(emu.url)).get(request.request_key)
    assert entry is not None
    assert entry.state == "COMPLETED"


def test_png_output_keeps_its_type_and_extension(
    emulator_factory: Any, local_store: ObjectStore
) -> None:
    emu = emulator_factory(workers=4, step_time=0.01, output_format="png")
    request = GenerationRequest(key="kite", prompt="a kite over dunes", seed=3, steps=1)
    build([request], local_store, emu)
    row = lineage_of(local_store).loc["kite"]
    assert row["content_type"] == "image/png"
    path = image_path(DAY, request, "png", service_backend(emu.url))
    assert row["image_uri"] == local_store.uri(path)
    assert local_store.read_bytes(path).startswith(b"\x89PNG")


def test_a_build_removes_staging_files_killed_processes_left(
    emulator: Any, local_store: ObjectStore, tmp_path: Path
) -> None:
    tmp = Path(local_store.path("_tmp"))
    tmp.mkdir(parents=True, exist_ok=True)
    old, recent = tmp / "killed-writer.part", tmp / "live-writer.part"
    old.write_bytes(b"half an image")
    recent.write_bytes(b"being written")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))

    build(requests_of(tmp_path)[:1], local_store, emulator)

    assert not old.exists()
    assert recent.exists()


def test_rows_generated_here_are_the_outcomes_own_not_copies(tmp_path: Path) -> None:
    """A partition's rows and its outcomes are held once while its lineage is written: a row
    generated for the partition is its outcome's row object; a prompt sharing the key, or a
    row cached from another partition, gets its own."""
    store = ObjectStore.from_uri(str(tmp_path))
    leader = GenerationRequest(key="p1", prompt="a lighthouse at dusk")
    twin = replace(leader, key="p2")
    row = replace(
        make_row("p1"),
        request_key=leader.request_key,
        backend=BACKEND,
        image_uri=store.uri(image_path("2026-01-01", leader, "jpg", BACKEND)),
    )
    path = store.relpath(row.image_uri or "")
    assert path is not None
    store.write_atomic(path, b"jpeg")
    outcome = Outcome(row, path, "2026-01-01")
    here = prompt_rows(store, outcome, (leader, twin), "2026-01-01", {}, blank_luma_std=2.0)
    assert here[0] is row
    assert here[1] is not row
    assert here[1].prompt_id == "p2"
    assert store.exists(image_path("2026-01-01", twin, "jpg", BACKEND))
    cached = prompt_rows(store, outcome, (leader,), "2026-01-02", {}, blank_luma_std=2.0)
    assert cached[0] is not row
    assert cached[0].cached

"""A path belongs to one request, reuse trusts only the sha256 it recorded, and partitions
written before backends were recorded still read (as unknown)."""

from __future__ import annotations

import io
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from flux_pipeline.builder import build_partition
from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.store.ledger import Ledger
from flux_pipeline.store.lineage import LINEAGE_SCHEMA, read_lineage
from flux_pipeline.store.provenance import backend_slug, image_id, is_service, service_backend
from flux_pipeline.store.storage import ObjectStore
from tests.support import forked_cli
from tests.support.loopback import fast_config

DAY = "2026-11-20"
FLUX_PIPELINE = Path(sys.executable).with_name("flux-pipeline")


def _build(store: ObjectStore, emu: Any, *requests: GenerationRequest, day: str = DAY) -> None:
    build_partition(list(requests), partition=day, store=store, engine_config=fast_config(emu.url))


def test_an_edited_prompt_with_the_same_seed_never_overwrites_the_older_image(
    emulator: Any, local_store: ObjectStore
) -> None:
    first = GenerationRequest(key="fox", prompt="a red fox in snow", seed=5, steps=1)
    edited = replace(first, prompt="a red fox in the rain")
    _build(local_store, emulator, first)
    _build(local_store, emulator, edited, day="2026-11-21")
    _build(local_store, emulator, edited)  # the first partition, rebuilt from the edited table

    ledger = Ledger(local_store, service_backend(emulator.url))
    old = ledger.get(first.request_key)
    assert old is not None
    assert old.lineage is not None
    assert old.image_path is not None
    assert local_store.sha256(old.image_path) == old.lineage.image_sha256  # still its image
    images = local_store.list(f"images/partition={DAY}")
    assert len([p for p in images if p.endswith(".jpg")]) == 2  # one file per request key
    row = read_lineage(local_store).set_index("partition").loc[DAY]
    assert row["request_key"] == edited.request_key
    assert row["cached"]  # the edited image was made for 2026-11-21, copied here


def test_reuse_checks_the_recorded_sha256_not_only_the_size(
    emulator: Any, local_store: ObjectStore
) -> None:
    owl = GenerationRequest(key="owl", prompt="a snowy owl at night", seed=9, steps=1)
    _build(local_store, emulator, owl)
    (path,) = [p for p in local_store.list("images") if p.endswith(".jpg")]
    size = local_store.size(path)
    local_store.write_atomic(path, b"\0" * size)  # same size, other bytes
    _build(local_store, emulator, owl)
    assert emulator.stats()["requests"]["submit"] == 2  # not reused: generated again
    (row,) = read_lineage(local_store).itertuples()
    assert local_store.sha256(path) == row.image_sha256


def test_names_never_collide_across_backends_or_keys() -> None:
    key_a, key_b = "a" * 64, "b" * 64
    names = {
        image_id(b, k)
        for b in ("https://api.segmind.com", "embedded-emulator")
        for k in (key_a, key_b)
    }
    assert len(names) == 4
    assert service_backend("https://user:pw@API.segmind.com/v1/?x=1") == "https://api.segmind.com"
    assert service_backend("http://127.0.0.1:8765/") == "http://127.0.0.1:8765"
    assert backend_slug("https://api.segmind.com").startswith("https-api.segmind.com-")
    assert backend_slug("http://a-b") != backend_slug("http://a:b")
    assert [is_service(b) for b in ("https://api.segmind.com", "embedded-emulator", None)] == [
        True,
        False,
        False,
    ]
    with pytest.raises(ValueError, match="SEGMIND_BASE_URL"):
        service_backend("ftp://example.com")


def test_a_partition_written_before_backends_reads_as_unknown_and_is_not_exported(
    emulator: Any, local_store: ObjectStore, tmp_path: Path
) -> None:
    """An older lineage file has no ``backend`` column: it reads as null everywhere, and an
    export leaves its rows out unless asked."""
    owl = GenerationRequest(key="owl", prompt="a snowy owl at night", seed=9, steps=1)
    _build(local_store, emulator, owl)
    lineage_file = f"lineage/partition={DAY}/lineage.parquet"
    table = pq.read_table(io.BytesIO(local_store.read_bytes(lineage_file)))
    # A file of that age has none of the columns added with or after ``backend``.
    later = LINEAGE_SCHEMA.names[LINEAGE_SCHEMA.names.index("backend") :]
    legacy = table.drop_columns(later)
    assert legacy.schema.names + later == LINEAGE_SCHEMA.names
    buffer = io.BytesIO()
    pq.write_table(legacy, buffer)
    local_store.write_atomic(lineage_file, buffer.getvalue())

    assert read_lineage(local_store)["backend"].isna().all()

    def export(*flags: str) -> dict[str, Any]:
        out = tmp_path / f"out{len(flags)}"
        run = forked_cli.run(
            [
                str(FLUX_PIPELINE),
                "export",
                "webdataset",
                str(out),
                "--root",
                local_store.root,
                *flags,
            ],
            env=os.environ,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
        manifest["stdout"] = run.stdout
        return manifest

    left_out = export()
    assert (left_out["samples"], left_out["synthetic_skipped"]) == (0, 1)
    assert "--include-synthetic exports them too" in left_out["stdout"]
    kept = export("--include-synthetic")
    assert (kept["samples"], kept["synthetic_skipped"]) == (1, 0)
    assert "synthetic rows included" in kept["stdout"]

"""The near-duplicate index over lineage files: who is flagged, against what, and what a
refresh reads (pure logic on a local root; the Dagster asset is tested in test_quality_dagster)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from flux_pipeline.protocol import request_key
from flux_pipeline.quality.multi_index import MultiIndex
from flux_pipeline.quality.near_duplicates import read_near_duplicates, refresh_near_duplicates
from flux_pipeline.store.layout import NEAR_DUPLICATES_PATH, phash_segment_path
from flux_pipeline.store.lineage import LineageRow, write_partition_lineage
from flux_pipeline.store.storage import ObjectStore
from tests.support.rows import make_row

BASE = 0x0123456789ABCDEF
FAR = 0xFEDCBA9876543210


def _row(partition: str, prompt_id: str, phash: int, **changes: object) -> LineageRow:
    variant = changes.get("variant", 0)
    suffix = f"-{variant}" if variant else ""
    fields: dict[str, object] = {
        "image_uri": f"/root/images/partition={partition}/{prompt_id}{suffix}.jpg",
        "request_key": request_key(
            "fast-flux-schnell", f"{partition} {prompt_id}", variant, 4, "1:1"
        ),
        "phash": f"{phash:016x}",
        "luma_std": 50.0,
        "blank": False,
    }
    return replace(make_row(prompt_id), **{**fields, **changes})  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return ObjectStore.from_uri(str(tmp_path / "root"))


def _flags(store: ObjectStore) -> dict[str, tuple[str, int]]:
    table = read_near_duplicates(store).to_pylist()
    return {r["image_uri"]: (r["near_duplicate_of"], r["distance"]) for r in table}


def test_the_later_image_in_partition_prompt_variant_order_is_flagged(store: ObjectStore) -> None:
    write_partition_lineage(
        store,
        "2026-01-02",
        [_row("2026-01-02", "b", BASE ^ 0b11), _row("2026-01-02", "a", BASE ^ 0b1)],
    )
    write_partition_lineage(store, "2026-01-01", [_row("2026-01-01", "z", BASE)])
    result = refresh_near_duplicates(store, 4)
    original = "/root/images/partition=2026-01-01/z.jpg"
    assert _flags(store) == {
        "/root/images/partition=2026-01-02/a.jpg": (original, 1),
        "/root/images/partition=2026-01-02/b.jpg": ("/root/images/partition=2026-01-02/a.jpg", 1),
    }
    assert result.flagged == {"2026-01-02": 2}
    assert result.rate("2026-01-02") == 1.0
    assert result.rate("2026-01-01") == 0.0


def test_variants_of_one_prompt_are_compared(store: ObjectStore) -> None:
    first = _row("2026-01-01", "p", BASE)
    variant = _row("2026-01-01", "p", BASE ^ 0b1, variant=1)
    write_partition_lineage(store, "2026-01-01", [variant, first])
    refresh_near_duplicates(store, 4)
    assert _flags(store) == {variant.image_uri: (first.image_uri, 1)}


def test_copies_blanks_other_backends_and_failed_rows_are_not_compared(
    store: ObjectStore,
) -> None:
    first = _row("2026-01-01", "p", BASE)
    rows = [
        first,
        _row("2026-01-01", "r", BASE, blank=True),
        _row("2026-01-01", "s", BASE, backend="https://other.example.com"),
        _row("2026-01-01", "t", BASE, status="FAILED"),
        _row("2026-01-01", "u", FAR),
    ]
    write_partition_lineage(store, "2026-01-01", rows)
    # A copy of the same generation in another partition (cross-partition reuse).
    write_partition_lineage(
        store, "2026-01-02", [_row("2026-01-02", "p", BASE, request_key=first.request_key)]
    )
    result = refresh_near_duplicates(store, 4)
    assert _flags(store) == {}
    assert result.completed == {"2026-01-01": 4, "2026-01-02": 1}


def test_a_refresh_reads_only_new_partitions_and_an_earlier_partition_takes_over(
    store: ObjectStore,
) -> None:
    write_partition_lineage(store, "2026-01-05", [_row("2026-01-05", "a", BASE)])
    assert refresh_near_duplicates(store, 4).read == ["2026-01-05"]
    write_partition_lineage(store, "2026-01-06", [_row("2026-01-06", "a", BASE ^ 0b111)])
    second = refresh_near_duplicates(store, 4)
    assert second.read == ["2026-01-06"]
    assert second.flagged == {"2026-01-06": 1}
    assert refresh_near_duplicates(store, 4).read == []
    # A backfilled earlier partition becomes the original of both.
    write_partition_lineage(store, "2026-01-01", [_row("2026-01-01", "a", BASE ^ 0b1)])
    third = refresh_near_duplicates(store, 4)
    assert third.read == ["2026-01-01"]
    early = "/root/images/partition=2026-01-01/a.jpg"
    assert _flags(store) == {
        "/root/images/partition=2026-01-05/a.jpg": (early, 1),
        "/root/images/partition=2026-01-06/a.jpg": (early, 2),  # nearer than 2026-01-05's (3)
    }


def test_a_rebuilt_partition_drops_the_flags_that_pointed_at_its_old_images(
    store: ObjectStore,
) -> None:
    write_partition_lineage(store, "2026-01-01", [_row("2026-01-01", "a", BASE)])
    write_partition_lineage(store, "2026-01-02", [_row("2026-01-02", "a", BASE ^ 0b1)])
    refresh_near_duplicates(store, 4)
    assert len(_flags(store)) == 1
    write_partition_lineage(store, "2026-01-01", [_row("2026-01-01", "a", FAR)])
    result = refresh_near_duplicates(store, 4)
    assert result.read == ["2026-01-01"]
    assert _flags(store) == {}


def test_changing_the_bits_recomputes_every_flag(store: ObjectStore) -> None:
    write_partition_lineage(store, "2026-01-01", [_row("2026-01-01", "a", BASE)])
    write_partition_lineage(store, "2026-01-02", [_row("2026-01-02", "a", BASE ^ 0b11111)])
    assert refresh_near_duplicates(store, 4).flagged == {}
    wider = refresh_near_duplicates(store, 5)
    assert wider.full
    assert wider.read == []  # the index segments are reused: only the flags depend on the bits
    assert wider.flagged == {"2026-01-02": 1}


def test_a_missing_or_corrupt_index_is_rebuilt_from_the_lineage_with_a_warning(
    store: ObjectStore,
) -> None:
    write_partition_lineage(store, "2026-01-01", [_row("2026-01-01", "a", BASE)])
    write_partition_lineage(store, "2026-01-02", [_row("2026-01-02", "a", BASE ^ 0b1)])
    refresh_near_duplicates(store, 4)
    store.write_atomic(phash_segment_path("2026-01-01"), b"not parquet")
    store.delete(phash_segment_path("2026-01-02"))
    warnings: list[str] = []
    result = refresh_near_duplicates(store, 4, warnings.append)
    assert result.read == ["2026-01-01", "2026-01-02"]
    assert sorted(warnings) == [
        "near_duplicates: index of partition 2026-01-01 unreadable, rebuilt from the lineage",
        "near_duplicates: index of partition 2026-01-02 missing, rebuilt from the lineage",
    ]
    assert result.flagged == {"2026-01-02": 1}
    store.write_atomic(NEAR_DUPLICATES_PATH, b"garbage")
    warnings.clear()
    again = refresh_near_duplicates(store, 4, warnings.append)
    assert again.full
    assert again.flagged == {"2026-01-02": 1}
    assert any(NEAR_DUPLICATES_PATH in w for w in warnings)


def test_bits_out_of_range_are_refused_naming_the_variable(store: ObjectStore) -> None:
    with pytest.raises(ValueError, match="FLUX_NEAR_DUPLICATE_BITS"):
        refresh_near_duplicates(store, 17)


@pytest.mark.parametrize("bits", [0, 1, 4, 9, 16])
def test_the_multi_index_finds_exactly_the_pairs_a_full_comparison_finds(bits: int) -> None:
    rng = np.random.default_rng(bits)
    hashes = rng.integers(0, 2**63, size=1500, dtype=np.uint64) * np.uint64(2)
    flips = rng.integers(0, 2**16, size=300, dtype=np.uint64)
    queries = np.concatenate([hashes[:300] ^ flips, rng.integers(0, 2**63, 200, np.uint64)])
    found = MultiIndex(hashes, bits).search(queries)
    distances = np.bitwise_count(queries[:, None] ^ hashes[None, :])
    expected_q, expected_e = np.nonzero(distances <= bits)
    assert set(zip(found.query.tolist(), found.entry.tolist(), strict=True)) == set(
        zip(expected_q.tolist(), expected_e.tolist(), strict=True)
    )
    assert (found.distance == distances[found.query, found.entry]).all()

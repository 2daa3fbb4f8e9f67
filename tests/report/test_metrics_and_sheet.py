from __future__ import annotations

import io
from dataclasses import replace
from datetime import timedelta

import pandas as pd
import pytest
from PIL import Image

from flux_pipeline.report.contact_sheet import render_contact_sheet
from flux_pipeline.report.metrics import METRIC_COLUMNS, METRIC_DESCRIPTIONS, generation_metrics
from flux_pipeline.store.lineage import read_lineage, write_partition_lineage
from flux_pipeline.store.storage import ObjectStore
from tests.support.rows import make_row


def test_metrics_per_partition(local_store: ObjectStore) -> None:
    base = make_row("a")
    start = base.submitted_at
    assert start is not None
    day1 = [
        replace(
            make_row(f"p{i}"),
            inference_time=float(i + 1),
            attempts=3 + (i == 3) * 2,
            submitted_at=start + timedelta(seconds=i),
            completed_at=start + timedelta(seconds=i + 2),
            image_bytes=100,
        )
        for i in range(4)
    ]
    day1.append(make_row("bad", status="FAILED"))
    write_partition_lineage(local_store, "2026-11-20", day1)
    write_partition_lineage(local_store, "2026-11-21", [make_row("x", cached=True)])

    metrics = generation_metrics(read_lineage(local_store))
    assert list(metrics.columns) == list(METRIC_COLUMNS)
    assert metrics["partition"].tolist() == ["2026-11-20", "2026-11-21"]
    first = metrics.iloc[0]
    assert (first["prompts"], first["completed"], first["failed"], first["cached"]) == (5, 4, 1, 0)
    assert first["failure_rate"] == pytest.approx(0.2)
    assert first["inference_time_p50_s"] == pytest.approx(2.5)
    assert first["inference_time_p95_s"] == pytest.approx(3.85)
    assert first["inference_time_max_s"] == 4.0
    assert first["latency_p50_s"] == pytest.approx(2.0)
    assert first["extra_requests"] == 2 + 1  # p3 and the failed row took more than the cheapest
    assert first["http_requests"] == 3 * 4 + 2 + 4
    assert first["throughput_images_per_s"] == pytest.approx(4 / 5)  # 4 images over 5 s
    assert first["bytes"] == 400
    second = metrics.iloc[1]
    assert (second["cached"], second["completed"], second["extra_requests"]) == (1, 1, 0)
    assert second["http_requests"] == 0  # nothing was sent for a cached row
    assert pd.isna(second["inference_time_p50_s"])  # no image was generated there
    assert pd.isna(second["throughput_images_per_s"])
    assert pd.isna(second["first_submitted_at"])


def test_a_partition_rebuilt_entirely_from_storage_has_null_timings(
    local_store: ObjectStore,
) -> None:
    write_partition_lineage(local_store, "2026-11-21", [make_row("x", cached=True)])

    metrics = generation_metrics(read_lineage(local_store))

    assert metrics["first_submitted_at"].isna().all()
    assert str(metrics["first_submitted_at"].dtype) == "datetime64[us, UTC]"
    assert metrics.loc[0, "cached"] == 1


def test_timings_of_a_partition_cover_only_the_images_it_generated(
    local_store: ObjectStore,
) -> None:
    """Reused rows keep the timestamps of an older build: counting them would stretch the
    window (here to a day) and mix that build's inference times into this one's."""
    start = make_row("a").submitted_at
    assert start is not None
    a_day_earlier = start - timedelta(days=1)
    reused = [
        replace(
            make_row(f"old{i}", cached=True),
            inference_time=9.0,
            attempts=40,
            submitted_at=a_day_earlier,
            completed_at=a_day_earlier + timedelta(seconds=30),
        )
        for i in range(2)
    ]
    generated = [
        replace(
            make_row(f"new{i}"),
            inference_time=1.0 + i / 3,
            submitted_at=start + timedelta(seconds=i / 4),
            completed_at=start + timedelta(seconds=1 + i / 4),
        )
        for i in range(4)
    ]
    write_partition_lineage(local_store, "2026-11-21", reused + generated)

    (row,) = generation_metrics(read_lineage(local_store)).itertuples()

    assert (row.prompts, row.completed, row.cached) == (6, 6, 2)
    assert row.throughput_images_per_s == 2.29  # 4 images over 1.75 s, not 6 over a day
    assert row.inference_time_max_s == 2.0
    assert row.inference_time_p50_s == 1.5
    assert row.latency_p95_s == 1.0
    assert row.http_requests == 4 * 4
    assert row.first_submitted_at == pd.Timestamp(start)
    assert row.last_completed_at == pd.Timestamp(start + timedelta(seconds=1.75))
    assert row.bytes == 6 * 1234  # bytes and counts describe every image the partition holds


def test_metrics_are_rounded_in_the_frame(local_store: ObjectStore) -> None:
    start = make_row("a").submitted_at
    assert start is not None
    rows = [
        replace(
            make_row(f"p{i}"),
            inference_time=2.3536999999999995 + i,
            submitted_at=start,
            completed_at=start + timedelta(seconds=3, microseconds=123457 * (i + 1)),
        )
        for i in range(3)
    ]
    rows.append(make_row("bad", status="FAILED"))
    write_partition_lineage(local_store, "2026-11-20", rows)

    (row,) = generation_metrics(read_lineage(local_store)).itertuples()

    assert row.inference_time_p50_s == 3.354
    assert row.inference_time_p95_s == 4.254
    assert row.latency_p50_s == 3.247
    assert row.throughput_images_per_s == 0.89  # 3 / 3.370371 s
    assert row.failure_rate == 0.25


def test_every_metric_column_has_a_description() -> None:
    assert tuple(METRIC_DESCRIPTIONS) == METRIC_COLUMNS
    assert all(text.strip() for text in METRIC_DESCRIPTIONS.values())


def test_metrics_of_no_lineage_is_an_empty_frame_with_columns(local_store: ObjectStore) -> None:
    metrics = generation_metrics(read_lineage(local_store))
    assert metrics.empty
    assert list(metrics.columns) == list(METRIC_COLUMNS)
    assert isinstance(metrics, pd.DataFrame)


def jpeg(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_contact_sheet_is_a_png_grid_of_thumbnails() -> None:
    items = [
        ("red", jpeg((1344, 768), (220, 0, 0))),
        ("tall", jpeg((640, 1536), (0, 0, 220))),
        ("broken", b"not an image"),
    ]
    sheet = Image.open(io.BytesIO(render_contact_sheet(items, columns=2, thumb=100)))
    assert sheet.format == "PNG"
    assert sheet.size == (2 * 108 + 8, 2 * (100 + 16 + 8) + 8)
    red = sheet.convert("RGB").getpixel((8 + 50, 8 + 50))
    assert isinstance(red, tuple)
    assert red[0] > 180
    assert red[2] < 60
    blue = sheet.convert("RGB").getpixel((8 + 108 + 50, 8 + 50))
    assert isinstance(blue, tuple)
    assert blue[2] > 180
    assert blue[0] < 60


def test_contact_sheet_without_images() -> None:
    sheet = Image.open(io.BytesIO(render_contact_sheet([])))
    assert sheet.format == "PNG"


def test_cost_counts_generated_images_and_runs_over_the_partitions(
    local_store: ObjectStore,
) -> None:
    write_partition_lineage(local_store, "2026-11-20", [make_row("a"), make_row("b")])
    write_partition_lineage(  # "a" again, paid by 2026-11-20; "c" failed, never billed
        local_store,
        "2026-11-21",
        [make_row("a", cached=True), make_row("c", status="FAILED"), make_row("d")],
    )
    write_partition_lineage(local_store, "2026-11-22", [make_row("a", cached=True)])

    metrics = generation_metrics(read_lineage(local_store)).set_index("partition")

    assert metrics["cost"].iloc[:2].tolist() == [0.006, 0.003]
    assert pd.isna(metrics["cost"].iloc[2])  # nothing generated there: no cost reported
    assert metrics["cost_to_date"].tolist() == [0.006, 0.009, 0.009]

"""Receipts on S3 (moto): an image is vouched for only while it is the version a build wrote."""

from __future__ import annotations

import hashlib

import pytest

from flux_pipeline.store.layout import receipts_path
from flux_pipeline.store.receipts import Receipt, keep_receipts, verified_by_receipts
from flux_pipeline.store.storage import ObjectStore

PARTITION = "2026-11-20"


def _write(store: ObjectStore, name: str, data: bytes) -> tuple[str, Receipt, int]:
    path = f"images/partition={PARTITION}/{name}"
    _, etag = store.write_tagged(path, data)
    assert etag  # S3 tags every version
    return path, Receipt(etag, hashlib.sha256(data).hexdigest()), len(data)


def test_receipts_vouch_only_for_unchanged_objects(s3_store: ObjectStore) -> None:
    a, receipt_a, size_a = _write(s3_store, "a.jpg", b"first image")
    b, receipt_b, size_b = _write(s3_store, "b.jpg", b"second image")
    keep_receipts(s3_store, PARTITION, {a: receipt_a})
    keep_receipts(s3_store, PARTITION, {b: receipt_b})  # merged with the first

    asked = [(a, receipt_a.sha256, size_a), (b, receipt_b.sha256, size_b)]
    assert verified_by_receipts(s3_store, PARTITION, asked) == {a, b}
    # A row naming another sha256 or size is not vouched for.
    assert verified_by_receipts(s3_store, PARTITION, [(a, "0" * 64, size_a)]) == set()
    assert verified_by_receipts(s3_store, PARTITION, [(a, receipt_a.sha256, 1)]) == set()

    s3_store.write_atomic(b, b"second image, rewritten")  # a new version, a new ETag
    assert verified_by_receipts(s3_store, PARTITION, asked) == {a}


def test_unreadable_receipts_vouch_for_nothing(
    s3_store: ObjectStore, caplog: pytest.LogCaptureFixture
) -> None:
    a, receipt_a, size_a = _write(s3_store, "a.jpg", b"first image")
    s3_store.write_atomic(receipts_path(PARTITION), b"{not json")
    assert verified_by_receipts(s3_store, PARTITION, [(a, receipt_a.sha256, size_a)]) == set()
    assert "unreadable" in caplog.text
    keep_receipts(s3_store, PARTITION, {a: receipt_a})  # replaced by a readable file
    assert verified_by_receipts(s3_store, PARTITION, [(a, receipt_a.sha256, size_a)]) == {a}


def test_a_local_folder_keeps_no_tags(local_store: ObjectStore) -> None:
    _, etag = local_store.write_tagged("images/partition=2026-11-20/a.jpg", b"x")
    assert etag is None

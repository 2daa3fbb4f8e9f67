"""Quality gates: CPU per image of the quality columns, a near_duplicates refresh at scale,
and how far apart the emulator's images are.

1. CPU per image (``time.process_time``) of ``phash`` + ``luma_std`` from the engine's decode
   (what a build adds per image), and of the read-and-decode path a partition built before the
   columns takes once. Target: at most 1 ms per image for the first.
2. A local root with ``INDEX_PARTITIONS`` x ``PARTITION_ROWS`` lineage rows (random phashes, a
   share planted as near-duplicates): the first refresh (a full build of the index), then the
   refresh that takes in one new partition of ``PARTITION_ROWS`` images. Target: at most 10 s.
3. The smallest phash distance between the emulator's full-size images of one prompt over
   ``SEEDS`` seeds, hashed as a build hashes them; ``FLUX_NEAR_DUPLICATE_BITS``' default must
   stay below it.
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flux_pipeline.emulator.render import render_image
from flux_pipeline.quality.facts import picture_facts
from flux_pipeline.quality.near_duplicates import (
    DEFAULT_NEAR_DUPLICATE_BITS,
    refresh_near_duplicates,
)
from flux_pipeline.segmind.media import check_image
from flux_pipeline.store.layout import lineage_path
from flux_pipeline.store.lineage import LINEAGE_SCHEMA
from flux_pipeline.store.storage import ObjectStore

FACT_IMAGES = 200
INDEX_PARTITIONS = 100
PARTITION_ROWS = 10_000
PLANTED = 100
SEEDS = int(os.environ.get("BENCH_QUALITY_SEEDS", "10000"))
PROMPT = "a photo of a cat on a windowsill"
CPU_TARGET_MS, REFRESH_TARGET_S = 1.0, 10.0


def _fact_costs() -> tuple[float, float]:
    bodies = [render_image(f"{PROMPT} {n}", n, 4, "1:1") for n in range(FACT_IMAGES)]
    previews = [check_image(body).preview for body in bodies]
    assert previews[0] is not None
    picture_facts(previews[0])  # the first call loads scipy's DCT: not a per-image cost
    start = time.process_time()
    for preview in previews:
        assert preview is not None
        picture_facts(preview)
    columns = (time.process_time() - start) / len(previews) * 1000
    start = time.process_time()
    for body in bodies:
        preview = check_image(body).preview
        assert preview is not None
        picture_facts(preview)
    decoded = (time.process_time() - start) / len(bodies) * 1000
    return columns, decoded


def _lineage(partition: str, hashes: np.ndarray) -> pa.Table:
    rows = len(hashes)
    ids = [f"p{n:06d}" for n in range(rows)]
    keys = [f"{partition}-{n:06d}".encode().hex().ljust(64, "0")[:64] for n in range(rows)]
    columns: dict[str, object] = {
        "prompt_id": ids,
        "prompt": ["bench"] * rows,
        "seed": [0] * rows,
        "steps": [4] * rows,
        "aspect_ratio": ["1:1"] * rows,
        "model": ["fast-flux-schnell"] * rows,
        "status": ["COMPLETED"] * rows,
        "attempts": [1] * rows,
        "image_uri": [f"/bench/images/partition={partition}/{i}.jpg" for i in ids],
        "request_key": keys,
        "cached": [False] * rows,
        "backend": ["embedded-emulator"] * rows,
        "phash": [f"{h:016x}" for h in hashes.tolist()],
        "luma_std": [40.0] * rows,
        "blank": [False] * rows,
    }
    if "variant" in LINEAGE_SCHEMA.names:
        columns["variant"] = [0] * rows
    full = {f.name: columns.get(f.name, pa.nulls(rows, f.type)) for f in LINEAGE_SCHEMA}
    return pa.table(full, schema=LINEAGE_SCHEMA)


def _write(store: ObjectStore, partition: str, hashes: np.ndarray) -> None:
    path = store.path(lineage_path(partition))
    store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    pq.write_table(_lineage(partition, hashes), path, compression="zstd")


def _refresh_times() -> tuple[float, float, int]:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as root:
        store = ObjectStore.from_uri(root)
        index = rng.integers(0, 2**64 - 1, size=(INDEX_PARTITIONS, PARTITION_ROWS), dtype=np.uint64)
        for day in range(INDEX_PARTITIONS):
            _write(store, f"2025-{1 + day // 28:02d}-{1 + day % 28:02d}", index[day])
        start = time.perf_counter()
        refresh_near_duplicates(store, DEFAULT_NEAR_DUPLICATE_BITS)
        full = time.perf_counter() - start
        new = rng.integers(0, 2**64 - 1, size=PARTITION_ROWS, dtype=np.uint64)
        flips = np.uint64(0b1011)  # 3 bits away from an indexed image
        picked = (
            rng.integers(0, INDEX_PARTITIONS, PLANTED),
            rng.integers(0, PARTITION_ROWS, PLANTED),
        )
        new[:PLANTED] = index[picked] ^ flips
        _write(store, "2026-01-01", new)
        start = time.perf_counter()
        found = refresh_near_duplicates(store, DEFAULT_NEAR_DUPLICATE_BITS)
        incremental = time.perf_counter() - start
        return full, incremental, found.flagged.get("2026-01-01", 0)


def _seed_hash(seed: int) -> int:
    preview = check_image(render_image(PROMPT, seed, 4, "1:1")).preview
    assert preview is not None
    return int(picture_facts(preview).phash, 16)


def _smallest_distance(seeds: int) -> tuple[int, int]:
    with ProcessPoolExecutor(max_workers=2) as pool:
        hashes = np.array(list(pool.map(_seed_hash, range(seeds), chunksize=64)), np.uint64)
    smallest, within = 64, 0
    for i in range(len(hashes) - 1):
        distances = np.bitwise_count(hashes[i] ^ hashes[i + 1 :])
        smallest = min(smallest, int(distances.min()))
        within += int((distances <= DEFAULT_NEAR_DUPLICATE_BITS).sum())
    return smallest, within


def main() -> None:
    columns, decoded = _fact_costs()
    print(
        f"quality columns: {columns:.3f} ms CPU per image from the engine's decode "
        f"(target <= {CPU_TARGET_MS} ms); {decoded:.3f} ms with a read-back decode "
        f"(a partition built before the columns, once)"
    )
    full, incremental, flagged = _refresh_times()
    total = INDEX_PARTITIONS * PARTITION_ROWS
    print(
        f"near_duplicates: first refresh of {total:,} phashes {full:.1f} s; a new partition "
        f"of {PARTITION_ROWS:,} against them {incremental:.2f} s (target <= {REFRESH_TARGET_S} s), "
        f"{flagged} of {PLANTED} planted near-duplicates flagged"
    )
    start = time.perf_counter()
    smallest, within = _smallest_distance(SEEDS)
    print(
        f"emulator: smallest phash distance over {SEEDS:,} seeds of one prompt: {smallest} bits "
        f"({within} pairs within the default {DEFAULT_NEAR_DUPLICATE_BITS}; "
        f"{time.perf_counter() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()

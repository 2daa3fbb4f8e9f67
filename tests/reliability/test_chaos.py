"""Chaos: a 210-prompt partition through a faulty, rate-limited, slow, queueing service.

The emulator answers 15% of all requests (submits, polls, results, downloads) with 500/502/504,
refuses requests above its per-key quota with 429 + ``Retry-After``, sends every answer
(faulted and refused ones too) a seeded 0..80 ms late, holds each job for ``steps x step_time``
(seeded jitter) behind fewer slots than the client keeps in flight, and blocks prompts
containing "NSFW". The client is deliberately paced above the quota (in async mode, so polls
and downloads are in the chaos too): its first 429s teach the engine the pace it holds to, so
they come as a short burst, not a storm.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pytest

from flux_pipeline.builder import build_partition
from flux_pipeline.emulator.jobs import CONTENT_POLICY_ERROR
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.storage import ObjectStore
from tests.support.reliability_support import (
    PARTITION,
    assert_whole_image,
    engine_config,
    sha256,
    table_requests,
    write_table,
)

PROMPTS, BLOCKED = 210, 6
LATENCY = 0.08


@pytest.mark.slow
def test_a_partition_survives_faults_429_bursts_slow_answers_and_slow_jobs(
    emulator_factory: Callable[..., Any], tmp_path: Path
) -> None:
    emu = emulator_factory(
        workers=6, step_time=0.03, fault_rate=0.15, latency=LATENCY, rate_limit=15.0, seed=7
    )
    requests = table_requests(write_table(tmp_path / "t.csv", PROMPTS, nsfw=BLOCKED, max_steps=8))
    store = ObjectStore.from_uri(str(tmp_path / "root"))
    config = engine_config(emu.url, mode="async", max_concurrency=24, requests_per_minute=3000.0)

    report = build_partition(requests, partition=PARTITION, store=store, engine_config=config)

    # the chaos really happened
    stats = emu.stats()
    assert report.engine.server_errors > 20
    assert report.engine.rate_limited >= 1
    assert report.engine.retries >= report.engine.server_errors + report.engine.rate_limited
    assert report.engine.ambiguous_submits == 0
    answers = sum(stats["requests"].values())
    assert stats["slow"]["answers"] == answers  # every answer went out late
    assert stats["slow"]["seconds"] > answers * LATENCY / 4

    # each request key was accepted by the service exactly once
    by_key = stats["jobs"]["by_request_key"]
    assert by_key == {r.request_key: 1 for r in requests}

    lineage = read_lineage(store).set_index("prompt_id")
    assert len(lineage) == PROMPTS
    assert sorted(lineage.index) == sorted(r.key for r in requests)
    blocked = {r.key for r in requests if "NSFW" in r.prompt}
    assert len(blocked) == BLOCKED

    for request in requests:
        row = lineage.loc[request.key]
        assert row["request_key"] == request.request_key
        if request.key in blocked:
            assert row["status"] == "FAILED", request.key
            assert row["error"] == CONTENT_POLICY_ERROR
            assert pd.isna(row["image_uri"])
            continue
        assert row["status"] == "COMPLETED", (request.key, row["error"])
        assert pd.isna(row["error"])
        with fsspec.open(row["image_uri"], "rb") as f:
            data = f.read()
        assert sha256(data) == row["image_sha256"]
        assert len(data) == row["image_bytes"]
        assert assert_whole_image(data, request.key) == (row["width"], row["height"])
    assert report.completed == PROMPTS - BLOCKED
    assert report.failed == BLOCKED
    stored = store.list(f"images/partition={PARTITION}")
    assert len(stored) == PROMPTS - BLOCKED + 1  # the images and metadata.jsonl

"""What a build costs the object store does not grow with the length of its range: counted
request by request, never timed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flux_pipeline.builder import RangeReport, build_partitions
from flux_pipeline.builder import range_build as build_module
from flux_pipeline.builder.held_claims import HeldClaims
from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.store.layout import CLAIMS_DIR, OWNERS_DIR
from flux_pipeline.store.storage import ObjectStore, Tagged
from tests.support.loopback import fast_config

PROMPTS = 30
WINDOW = 4


class SortingStore(ObjectStore):
    """A local store that also sorts its requests: heartbeat writes, claim reads, the rest."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kinds: Counter[str] = Counter()

    def write_atomic(self, relpath: str, data: bytes) -> str:
        self.kinds["heartbeat" if relpath.startswith(f"{OWNERS_DIR}/") else "other"] += 1
        return super().write_atomic(relpath, data)

    def read_tagged(self, relpath: str) -> Tagged | None:
        self.kinds["claim read" if relpath.startswith(f"{CLAIMS_DIR}/") else "other"] += 1
        return super().read_tagged(relpath)

    def other_requests(self) -> int:
        """Every request but heartbeat writes and claim reads."""
        total = sum(self.requests.snapshot().values())
        return total - self.kinds["heartbeat"] - self.kinds["claim read"]


def _build(tmp_path: Path, emulator: Any, partitions: int) -> tuple[SortingStore, RangeReport]:
    store = SortingStore.from_uri(str(tmp_path / f"root{partitions}"))
    assert isinstance(store, SortingStore)
    days = [f"2026-11-{day + 1:02d}" for day in range(partitions)]
    requests = {
        day: [
            GenerationRequest(key=f"p{i}", prompt=f"a lighthouse {i} on {day}", seed=i, steps=1)
            for i in range(PROMPTS)
        ]
        for day in days
    }
    config = fast_config(emulator.url, max_concurrency=WINDOW)
    return store, build_partitions(requests, store=store, engine_config=config)


def test_claim_renewals_and_storage_requests_do_not_grow_with_the_range(
    emulator_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A renewal pass every 0.5 s under an hour's lease: a pass later than three quarters of the
    # lease (which reads every held claim back, by design) cannot happen however loaded the
    # machine, so every pass is counted at its on-time cost.
    monkeypatch.setattr(build_module, "CLAIM_LEASE", 3600.0)
    monkeypatch.setattr(HeldClaims, "renew_every", property(lambda _: 0.5))
    emulator = emulator_factory(workers=WINDOW, step_time=0.15)  # builds of several passes
    short_store, short = _build(tmp_path, emulator, partitions=1)
    long_store, long = _build(tmp_path, emulator, partitions=4)

    for store, report in ((short_store, short), (long_store, long)):
        images = report.engine.completed
        assert images == PROMPTS * len(report.partitions)
        passes = store.kinds["heartbeat"] - 2  # the first beat and the end's are no pass
        assert passes > 0  # the build outlived several renewal passes
        # Each pass is one heartbeat write and at most a window of claim reads, however many
        # keys the run holds (a partition's keys are all claimed before they are sent).
        assert store.kinds["claim read"] <= passes * WINDOW
        # Per new image: claim, SENDING (the record that a POST may be out, written before it:
        # a restart resolves it from the account's record), SUBMITTED, image, COMPLETED writes;
        # per partition the listings of its images and of the ledger (its new keys need no
        # read), metadata.jsonl, lineage; per build one listing and one line read of the
        # previous partition's metadata keys (the mixed-root warning).
        assert store.other_requests() <= 5 * images + 4 * len(report.partitions) + 2
        assert report.storage_requests == store.requests.snapshot()
    per_image_short = short_store.other_requests() / short.engine.completed
    per_image_long = long_store.other_requests() / long.engine.completed
    assert per_image_long <= per_image_short

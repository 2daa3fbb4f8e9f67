"""``build_partitions`` (one engine for a range), ``cached`` across rebuilds, the read-only plan,
and claims between concurrent builds: every request key submitted once, against the emulator."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from flux_pipeline.builder import BuildReport, build_partition, build_partitions
from flux_pipeline.builder import range_build as build_module
from flux_pipeline.builder.planning import plan_partitions
from flux_pipeline.prompts import load_prompt_table, partition_requests
from flux_pipeline.protocol import MODEL, GenerationRequest
from flux_pipeline.report.metrics import generation_metrics
from flux_pipeline.store.claims import Claims
from flux_pipeline.store.layout import OWNERS_DIR, claim_path
from flux_pipeline.store.ledger import Ledger
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.provenance import service_backend
from flux_pipeline.store.storage import ObjectStore, StorageError
from tests.support.loopback import TEST_KEY, fast_config

DAYS = ("2026-11-20", "2026-11-21", "2026-11-22")
#: whale/twin pin one seed (one request key in every partition); the others derive per day.
TABLE = """prompt_id,prompt,seed,steps,aspect_ratio
fox,a red fox in snow,,2,1:1
whale,a humpback whale breaching,11,1,16:9
tower,a spiral library tower,,3,9:21
twin,a humpback whale breaching,11,1,16:9
moth,a luna moth on bark,5,1,1:1
blocked,something nsfw,,1,1:1
"""


def table(tmp_path: Path) -> Any:
    path = tmp_path / "table.csv"
    path.write_text(TABLE)
    return load_prompt_table(str(path))


def by_partition(tmp_path: Path, days: tuple[str, ...] = DAYS) -> dict[str, list[Any]]:
    prompts = table(tmp_path)
    return {day: partition_requests(prompts, day) for day in days}


def submits_by_key(emu: Any) -> dict[str, int]:
    return dict(emu.stats()["jobs"]["by_request_key"])


def api_calls(emu: Any) -> int:
    return sum(emu.stats()["requests"].values())


def lineage_of(store: ObjectStore, partition: str) -> pd.DataFrame:
    frame = read_lineage(store)
    return frame[frame["partition"] == partition].set_index("prompt_id").sort_index()


def metrics_of(store: ObjectStore) -> pd.DataFrame:
    return generation_metrics(read_lineage(store)).set_index("partition")


def test_a_range_is_built_with_one_engine_and_every_key_sent_once(
    emulator: Any, local_store: ObjectStore, tmp_path: Path
) -> None:
    partitions = by_partition(tmp_path)
    caller = threading.get_ident()
    done: list[tuple[str, int, int]] = []

    def on_done(report: BuildReport) -> None:
        assert threading.get_ident() == caller
        lineage = lineage_of(local_store, report.partition)  # written before the callback
        done.append((report.partition, len(lineage), report.completed))

    run = build_partitions(
        partitions,
        store=local_store,
        engine_config=fast_config(emulator.url),
        on_partition_done=on_done,
    )

    assert sorted(done) == [(day, 6, 5) for day in DAYS]
    assert [r.partition for r in run.partitions] == list(DAYS)
    sent = submits_by_key(emulator)
    assert set(sent.values()) == {1}
    # fox, tower, blocked per day + whale and moth once for the range
    assert len(sent) == 3 * 3 + 2
    assert run.engine.submitted == len(sent)
    first, *later = run.partitions
    assert (first.cached, first.failed) == (0, 1)
    assert all(r.cached == 3 for r in later)  # whale, twin, moth came from the first day
    day2 = lineage_of(local_store, DAYS[1])
    day1 = lineage_of(local_store, DAYS[0])
    assert day2.loc["whale", "request_id"] == day1.loc["whale", "request_id"]
    assert bool(day2.loc["whale", "cached"])
    assert not bool(day1.loc["whale", "cached"])
    assert day2.loc["whale", "image_uri"].startswith(local_store.uri(f"images/partition={DAYS[1]}"))
    assert sum(r.api_requests for r in run.partitions) > 0
    assert later[0].api_requests > 0  # its own derived-seed images

    before = (api_calls(emulator), read_lineage(local_store), metrics_of(local_store))
    again = build_partitions(partitions, store=local_store, engine_config=fast_config(emulator.url))
    assert api_calls(emulator) == before[0]
    assert [r.reused for r in again.partitions] == [6, 6, 6]
    pd.testing.assert_frame_equal(read_lineage(local_store), before[1])
    pd.testing.assert_frame_equal(metrics_of(local_store), before[2])


def test_a_rebuild_keeps_the_rows_and_metrics_as_generated(
    emulator: Any, local_store: ObjectStore, tmp_path: Path
) -> None:
    requests = by_partition(tmp_path, DAYS[:1])[DAYS[0]]
    build_partition(
        requests, partition=DAYS[0], store=local_store, engine_config=fast_config(emulator.url)
    )
    lineage, metrics = lineage_of(local_store, DAYS[0]), metrics_of(local_store)
    # whale and twin share one generation: counted once
    generated = lineage.drop_duplicates("request_key")
    assert metrics.loc[DAYS[0], "http_requests"] == generated["attempts"].sum()
    assert metrics.loc[DAYS[0], "cached"] == 0
    assert pd.notna(metrics.loc[DAYS[0], "throughput_images_per_s"])

    calls = api_calls(emulator)
    report = build_partition(
        requests, partition=DAYS[0], store=local_store, engine_config=fast_config(emulator.url)
    )
    assert (api_calls(emulator), report.api_requests, report.reused) == (calls, 0, 6)
    pd.testing.assert_frame_equal(lineage_of(local_store, DAYS[0]), lineage)
    pd.testing.assert_frame_equal(metrics_of(local_store), metrics)


def test_the_plan_counts_each_new_image_once_and_the_build_follows_it(
    emulator: Any, local_store: ObjectStore, tmp_path: Path
) -> None:
    partitions = by_partition(tmp_path)
    ledger = Ledger(local_store, service_backend(emulator.url))
    plans = plan_partitions(ledger, partitions)
    assert [p.new_images for p in plans] == [5, 3, 3]
    assert [p.prompts("shared") for p in plans] == [0, 3, 3]
    assert api_calls(emulator) == 0

    build_partitions(partitions, store=local_store, engine_config=fast_config(emulator.url))
    assert len(submits_by_key(emulator)) == sum(p.new_images for p in plans)
    after = plan_partitions(ledger, partitions)
    assert [(p.prompts("reuse"), p.prompts("failed"), p.new_images) for p in after] == [
        (5, 1, 0)
    ] * 3


def held_live(claims: Claims, request_key: str) -> bool:
    """Whether a live claim holds ``request_key`` (a build that ended holds none)."""
    holder = claims.holder(request_key)
    return holder is not None and claims.is_live(holder)


def test_a_failing_partition_callback_stops_the_build(
    emulator: Any, local_store: ObjectStore, tmp_path: Path
) -> None:
    def refuse(report: BuildReport) -> None:
        raise RuntimeError(f"cannot log {report.partition}")

    with pytest.raises(RuntimeError, match="cannot log"):
        build_partitions(
            by_partition(tmp_path),
            store=local_store,
            engine_config=fast_config(emulator.url),
            on_partition_done=refuse,
        )
    claims = Claims(local_store)
    assert not any(held_live(claims, key) for key in submits_by_key(emulator))  # ended


def run_in_threads(*builds: Any) -> list[Any]:
    results: list[Any] = [None] * len(builds)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = builds[i]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(builds))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def test_two_concurrent_builds_of_one_partition_pay_each_key_once(
    emulator_factory: Any, local_store: ObjectStore, tmp_path: Path
) -> None:
    emu = emulator_factory(workers=4, step_time=0.05)
    requests = by_partition(tmp_path, DAYS[:1])[DAYS[0]]
    config = fast_config(emu.url, max_concurrency=4)

    def build() -> BuildReport:
        return build_partition(requests, partition=DAYS[0], store=local_store, engine_config=config)

    reports = run_in_threads(build, build)

    # the builds did overlap: at least one took outcomes from the other's claims
    assert sum(r.from_other_runs for r in reports) > 0
    assert set(submits_by_key(emu).values()) == {1}
    assert len(submits_by_key(emu)) == 5
    assert [(r.total, r.completed, r.failed) for r in reports] == [(6, 5, 1)] * 2
    lineage = lineage_of(local_store, DAYS[0])
    assert len(lineage) == 6
    assert not lineage["cached"].any()  # both runs built this partition: nothing cached


def test_overlapping_ranges_with_pinned_seeds_pay_each_key_once(
    emulator_factory: Any, local_store: ObjectStore, tmp_path: Path
) -> None:
    emu = emulator_factory(workers=4, step_time=0.05)
    partitions = by_partition(tmp_path)
    config = fast_config(emu.url, max_concurrency=4)
    first = {d: partitions[d] for d in DAYS[:2]}
    second = {d: partitions[d] for d in DAYS[1:]}

    runs = run_in_threads(
        lambda: build_partitions(first, store=local_store, engine_config=config),
        lambda: build_partitions(second, store=local_store, engine_config=config),
    )

    assert sum(p.from_other_runs for run in runs for p in run.partitions) > 0  # they overlapped
    sent = submits_by_key(emu)
    assert set(sent.values()) == {1}
    assert len(sent) == 3 * 3 + 2
    assert [len(r.partitions) for r in runs] == [2, 2]
    for day in DAYS:
        lineage = lineage_of(local_store, day)
        assert len(lineage) == 6
        assert (lineage["status"] == "COMPLETED").sum() == 5


def test_a_dead_claim_is_taken_over_and_its_job_attached(
    emulator: Any, local_store: ObjectStore
) -> None:
    """A run died holding two claims, one with a job in flight: after the lease the build
    takes both over, attaches to the recorded job and submits the other once."""
    moth = GenerationRequest(key="moth", prompt="a luna moth on bark", seed=5, steps=1)
    owl = GenerationRequest(key="owl", prompt="a snowy owl at night", seed=9, steps=1)
    ghost = Claims(local_store, owner="dead-run", lease=0.5)
    assert ghost.claim_many([moth.request_key, owl.request_key])[0] == {
        moth.request_key,
        owl.request_key,
    }
    answer = httpx.post(
        f"{emulator.url}/v2/{MODEL}", json=moth.payload(), headers={"x-api-key": TEST_KEY}
    )
    Ledger(local_store, service_backend(emulator.url)).record_submitted(
        moth.request_key, answer.json()["request_id"]
    )
    report = build_partition(
        [moth, owl], partition=DAYS[0], store=local_store, engine_config=fast_config(emulator.url)
    )

    assert report.completed == 2
    assert submits_by_key(emulator) == {moth.request_key: 1, owl.request_key: 1}
    assert report.engine.attached == 1
    claims = Claims(local_store)
    assert not held_live(claims, moth.request_key)
    assert not held_live(claims, owl.request_key)


def test_a_claim_taken_over_before_its_request_is_sent_is_not_sent(
    emulator_factory: Any,
    local_store: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A run's claim on a key still queued behind its window is lost (its lease ran out: a
    stalled process, skewed clocks) and another run takes the key over and pays for it: the
    first run does not send it, and reuses the other run's image."""
    monkeypatch.setattr(build_module, "CLAIM_LEASE", 1.0)  # renewed every 0.25 s
    emu = emulator_factory(workers=2, step_time=0.4)
    slow = [
        GenerationRequest(key=f"snail{n}", prompt=f"a garden snail number {n}", seed=n, steps=4)
        for n in (1, 2)
    ]
    late = GenerationRequest(key="heron", prompt="a grey heron at dawn", seed=3, steps=1)
    one_at_a_time = fast_config(emu.url, max_concurrency=1)  # heron waits ~3 s for the window

    def first_run() -> BuildReport:
        return build_partition(
            [*slow, late], partition=DAYS[0], store=local_store, engine_config=one_at_a_time
        )

    def other_run() -> BuildReport:
        ledger, deadline = Ledger(local_store, service_backend(emu.url)), time.monotonic() + 30
        while ledger.get(slow[0].request_key) is None:  # the first run has claimed and submits
            assert time.monotonic() < deadline, "the first run never submitted"
            time.sleep(0.01)
        held = Claims(local_store).holder(late.request_key)
        assert held is not None
        # Stand-in for a lapsed lease: the claim is freed under its holder, then taken over.
        local_store.write_atomic(
            claim_path(late.request_key), replace(held, released=True).to_json()
        )
        return build_partition(
            [late], partition=DAYS[0], store=local_store, engine_config=fast_config(emu.url)
        )

    first, other = run_in_threads(first_run, other_run)

    assert submits_by_key(emu) == {r.request_key: 1 for r in [*slow, late]}
    assert (other.completed, first.completed, first.from_other_runs) == (1, 3, 1)
    taken_over = [m for m in caplog.messages if "were taken over" in m]
    assert taken_over == [
        "1 claim(s) were taken over by another run; those not sent yet are not sent by this run"
    ]
    lineage = lineage_of(local_store, DAYS[0])  # the first run's, written last
    assert (len(lineage), set(lineage["status"])) == (3, {"COMPLETED"})
    assert not lineage["cached"].any()


class FlakyClaimsStore(ObjectStore):
    """A local store whose claim renewals (the heartbeat once written, compare-and-swap of a
    claim) fail ``failures`` times: a storage outage seen only by the claims."""

    failures = 0

    def _outage(self, relpath: str) -> None:
        if self.failures:
            self.failures -= 1
            raise StorageError(f"could not write {relpath}: injected outage")

    def write_atomic(self, relpath: str, data: bytes) -> str:
        if relpath.startswith(f"{OWNERS_DIR}/") and self.exists(relpath):
            self._outage(relpath)
        return super().write_atomic(relpath, data)

    def replace_if(self, relpath: str, data: bytes, tag: str) -> bool:
        self._outage(relpath)
        return super().replace_if(relpath, data, tag)


def flaky_store(tmp_path: Path, failures: int) -> FlakyClaimsStore:
    store = FlakyClaimsStore.from_uri(str(tmp_path / "flaky"))
    assert isinstance(store, FlakyClaimsStore)
    store.failures = failures
    return store


def test_a_failed_claim_renewal_is_retried(
    emulator_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(build_module, "CLAIM_LEASE", 2.0)  # renewed every 0.5 s
    emu = emulator_factory(workers=2, step_time=0.4)
    store = flaky_store(tmp_path, failures=1)
    snail = GenerationRequest(key="snail", prompt="a garden snail", seed=1, steps=4)

    report = build_partition(
        [snail], partition=DAYS[0], store=store, engine_config=fast_config(emu.url)
    )

    assert report.completed == 1
    assert any("could not renew 1 claim(s)" in m for m in caplog.messages)


def test_claims_unrenewed_for_half_their_lease_stop_the_build(
    emulator_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_module, "CLAIM_LEASE", 0.4)
    emu = emulator_factory(workers=2, step_time=0.5)
    store = flaky_store(tmp_path, failures=1_000_000)
    snail = GenerationRequest(key="snail", prompt="a garden snail", seed=1, steps=4)

    with pytest.raises(StorageError, match=r"could not renew the claims of 1 request key\(s\)"):
        build_partition([snail], partition=DAYS[0], store=store, engine_config=fast_config(emu.url))
    assert store.list("lineage") == []

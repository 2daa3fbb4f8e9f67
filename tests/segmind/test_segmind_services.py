"""Services unlike the emulator's defaults: no sync endpoint, no metrics, 429 bursts."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.segmind.modes import ModeChooser
from flux_pipeline.segmind.pacing import RequestPacer
from flux_pipeline.segmind.stats import EngineStats
from tests.support.loopback import fast_config
from tests.support.segmind_support import batch, run_engine


@pytest.mark.parametrize("mode", ["sync", "auto"])
def test_a_v2_only_service_completes_every_image_with_one_warning(
    emulator_factory: Any, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    """The issue's case: v1 answers 404, 10 % of requests fault, one prompt is blocked.
    ``auto`` is told a quota that binds, so it tries v1; ``sync`` asks for v1 outright."""
    caplog.set_level(logging.WARNING, logger="flux_pipeline.segmind")
    emu = emulator_factory(workers=8, step_time=0.01, v2_only=True, fault_rate=0.1, seed=5)
    requests = [*batch(39), GenerationRequest(key="blocked", prompt="an nsfw scene", seed=1)]
    config = fast_config(emu.url, mode=mode, requests_per_minute=60 * 60 / 2.0, max_retries=12)

    results, stats = run_engine(config, iter(requests))

    by_key = {r.request.key: r for r in results}
    assert len(by_key) == 40
    assert by_key.pop("blocked").status == "FAILED"
    assert [r.status for r in by_key.values()] == ["COMPLETED"] * 39
    assert stats.sync_unavailable
    assert stats.mode_used == "async"
    assert stats.completed_by_mode["sync"] == 0
    served = emu.stats()
    assert served["requests"]["sync"] >= 1
    assert served["jobs"]["by_request_key"] == {r.request_key: 1 for r in requests}
    warned = [r for r in caplog.records if "answered HTTP 404" in r.getMessage()]
    assert len(warned) == 1


def test_polls_stay_few_when_status_bodies_carry_no_metrics(emulator_factory: Any) -> None:
    """The issue's case scaled down: 32 in flight on 16 slots, no ``metrics`` anywhere.
    It measured 4.68 API requests per image (4.31 here at 600 x 1 s before the fix)."""
    emu = emulator_factory(workers=16, step_time=0.1, metrics=False)

    results, stats = run_engine(
        fast_config(emu.url, mode="async", max_concurrency=32, prior_step_time=0.1), batch(256)
    )

    assert [r.status for r in results] == ["COMPLETED"] * 256
    assert all(r.queue_time is None and r.inference_time is None for r in results)
    served = emu.stats()["requests"]
    api = served["submit"] + served["status"] + served["result"]
    assert api == stats.api_requests
    assert api / 256 <= 3.5


def _chooser(per_minute: float | None) -> tuple[ModeChooser, RequestPacer, EngineStats]:
    stats = EngineStats(mode="auto")
    pacer = RequestPacer(per_minute, stats)
    return ModeChooser("auto", pacer, stats), pacer, stats


def _sent(stats: EngineStats, count: int) -> None:
    """``count`` requests let through by the pacer (as :meth:`RequestPacer.wait` counts)."""
    stats.paced += count


def test_one_burst_of_429s_does_not_switch_auto_to_v1(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    chooser, pacer, stats = _chooser(None)
    _sent(stats, 40)
    clock[0] += 2.0
    for _ in range(5):  # one burst: 5 answers 429 at once
        stats.rate_limited += 1
        pacer.rate_limited(1.0)
    for _ in range(6):  # then requests go out at the pace learned from it, for a while
        clock[0] += 1.0
        _sent(stats, 30)
        assert chooser.pick() == "async"
    assert stats.mode_switches == 0


def test_429s_that_come_back_after_the_hold_are_a_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    chooser, pacer, stats = _chooser(None)
    for _burst in range(2):
        _sent(stats, 40)
        clock[0] += 2.0
        pacer.rate_limited(1.0)
    rate = pacer.rate
    assert rate is not None
    clock[0] += 1.0
    _sent(stats, int(rate) + 8)  # requests go out at the learned pace
    assert chooser.pick() == "sync"


def test_a_configured_quota_that_binds_switches_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    chooser, _pacer, stats = _chooser(600.0)  # 10 per second
    clock[0] += 1.0
    _sent(stats, 10)
    assert chooser.pick() == "sync"
    chooser.sync_unavailable()
    assert chooser.pick() == "async"
    clock[0] += 3.0
    _sent(stats, 30)
    assert chooser.pick() == "async"  # no v1 here: never again

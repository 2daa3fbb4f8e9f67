"""The engine under the service's queue and the account's quota, against the emulator:
API requests per image, pacing of API requests only, and the ``auto`` mode."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.support.loopback import fast_config
from tests.support.segmind_support import batch, run_engine


def _api_requests(stats: dict[str, Any]) -> int:
    return sum(n for kind, n in stats["requests"].items() if kind != "output")


def _most_per_window(pace_gap: float | None, window: float) -> int:
    """The most requests the pacer scheduled in any ``window`` seconds, from the shortest gap
    it left between two of them."""
    assert pace_gap is not None
    assert pace_gap > 0
    return math.floor(window / pace_gap) + 1


@pytest.mark.parametrize("in_flight", [4, 16, 32])
def test_polls_stay_few_whatever_the_service_queue(emulator_factory: Any, in_flight: int) -> None:
    """4 slots: up to 28 of our jobs wait in the service's queue; polls must not grow with it.

    About 2-2.5 requests per image here; polling blind to the queue costs 5-7 at 16 and 32 in
    flight. The bound leaves room for a loaded machine's late answers (extra polls).
    """
    emu = emulator_factory(workers=4, step_time=0.02)

    results, stats = run_engine(
        fast_config(emu.url, mode="async", max_concurrency=in_flight), batch(96)
    )

    assert [r.status for r in results] == ["COMPLETED"] * 96
    served = emu.stats()
    assert served["requests"]["submit"] == 96
    assert _api_requests(served) / 96 <= 4.0
    assert stats.api_requests == _api_requests(served)
    assert stats.mode_used == "async"


def test_requests_per_minute_paces_api_requests_only_and_meets_no_quota_refusal(
    emulator_factory: Any,
) -> None:
    """A quota of 30 requests per 3 s counting every API request, the client set to it.

    18 images take about 36 requests, more than one window holds. The pacer never schedules
    more requests in a window than the quota allows (counted on its schedule, whatever the
    load). How many 429s the wire then sees depends on how late a loaded machine sends them:
    that share is measured in bench/bench_quota.py (target under 1 %).
    """
    emu = emulator_factory(
        workers=8, step_time=0.01, quota_per_minute=30, quota_counts="all", quota_window=3.0
    )

    results, stats = run_engine(
        fast_config(emu.url, mode="async", requests_per_minute=30 * 60 / 3.0), batch(18)
    )

    assert [r.status for r in results] == ["COMPLETED"] * 18
    served = emu.stats()
    assert _api_requests(served) > 30  # the quota's window filled
    assert _most_per_window(stats.pace_gap, 3.0) <= 30
    assert sum(served["quota"]["refused"].values()) == stats.rate_limited
    assert served["requests"]["output"] == 18  # media downloads: served, never paced
    assert stats.paced == _api_requests(served) == stats.api_requests
    assert stats.pace_waits > 0  # the pace did bind


def test_without_requests_per_minute_429s_are_honoured_and_the_pace_learned(
    emulator_factory: Any,
) -> None:
    emu = emulator_factory(
        workers=8, step_time=0.01, quota_per_minute=10, quota_counts="all", quota_window=1.0
    )

    results, stats = run_engine(fast_config(emu.url, mode="async"), batch(16))

    assert [r.status for r in results] == ["COMPLETED"] * 16
    refused = sum(emu.stats()["quota"]["refused"].values())
    assert refused == stats.rate_limited > 0
    assert stats.pace_waits > 0  # requests waited for the 429's reset instead of hammering
    assert emu.stats()["jobs"]["by_request_key"] == {r.request.request_key: 1 for r in results}


@pytest.mark.parametrize("counts", ["all", "submits"])
def test_auto_switches_to_one_request_per_image_while_the_quota_binds(
    emulator_factory: Any, counts: str
) -> None:
    """A quota of 10 requests per 2 s (5/s), the client set to it: the pace binds, so new
    images move to v1. How many more images that makes is measured in bench/. The pace is low
    enough that even a client on a machine loaded many times over has requests waiting for it
    (at 30/s, a starved client sent less than the 85 % that counts as binding, and stayed on v2)."""
    emu = emulator_factory(
        workers=8, step_time=0.01, quota_per_minute=10, quota_counts=counts, quota_window=2.0
    )

    results, stats = run_engine(
        fast_config(emu.url, mode="auto", requests_per_minute=10 * 60 / 2.0), batch(24)
    )

    assert [r.status for r in results] == ["COMPLETED"] * 24
    served = emu.stats()
    assert _most_per_window(stats.pace_gap, 2.0) <= 10  # the 429 share: bench/bench_quota.py
    assert sum(served["quota"]["refused"].values()) == stats.rate_limited
    assert stats.mode_switches >= 1
    assert stats.mode_used == "async+sync"
    assert served["requests"]["sync"] == stats.completed_by_mode["sync"] > 0


def test_auto_stays_async_when_no_quota_binds(emulator: Any) -> None:
    results, stats = run_engine(fast_config(emulator.url, mode="auto"), batch(24))

    assert [r.status for r in results] == ["COMPLETED"] * 24
    assert stats.mode_used == "async"
    assert stats.mode_switches == 0
    assert emulator.stats()["requests"]["sync"] == 0


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_fixed_mode_is_reported_as_used(emulator: Any, mode: str) -> None:
    _, stats = run_engine(fast_config(emulator.url, mode=mode), batch(3))

    assert (stats.mode, stats.mode_used, stats.completed_by_mode[mode]) == (mode, mode, 3)

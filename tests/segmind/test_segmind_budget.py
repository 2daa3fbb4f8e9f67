"""The budget guard against the emulator: never an accepted submit past the budget."""

from __future__ import annotations

from typing import Any

import pytest

from flux_pipeline.protocol import GenerationRequest
from tests.support.loopback import fast_config
from tests.support.segmind_support import batch, hangup_server, run_engine


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_budget_of_5_images_sends_exactly_5_submits(emulator: Any, mode: str) -> None:
    results, stats = run_engine(
        fast_config(emulator.url, mode=mode, max_concurrency=8, max_new_images=5), batch(12)
    )

    served = emulator.stats()["requests"]
    assert served["submit"] + served["sync"] == 5
    done = [r for r in results if r.status == "COMPLETED"]
    refused = [r for r in results if r.status == "FAILED"]
    assert (len(done), len(refused)) == (5, 7)
    assert all(r.retryable and r.request_id is None for r in refused)
    assert all(r.error == "budget max_new_images=5 reached: not submitted" for r in refused)
    assert (stats.submitted, stats.budget_refused) == (5, 7)
    assert (stats.budget_spent_images, stats.budget_reason) == (
        5,
        "budget max_new_images=5 reached",
    )


def test_auto_mode_refuses_past_the_budget_without_taking_the_pace(emulator: Any) -> None:
    """A binding pace (8 in flight at 4 requests/s): requests the budget refuses never wait
    for a place in it, so the pacer lets through exactly the requests sent."""
    results, stats = run_engine(
        fast_config(emulator.url, mode="auto", max_new_images=2, requests_per_minute=240),
        batch(40),
    )

    served = emulator.stats()["requests"]
    assert served["submit"] + served["sync"] == 2
    assert sorted(r.status for r in results) == ["COMPLETED"] * 2 + ["FAILED"] * 38
    assert stats.budget_refused == 38
    assert (
        stats.paced
        == stats.api_requests
        == sum(n for kind, n in served.items() if kind != "output")
    )


def test_a_max_cost_stops_at_the_price_of_the_images_it_covers(emulator_factory: Any) -> None:
    """An emulator billing 1.0 USD per image: 3.5 covers 3 (the estimate before any report:
    1.0)."""
    emulator = emulator_factory(workers=8, step_time=0.02, price=1.0)
    results, stats = run_engine(
        fast_config(emulator.url, max_cost=3.5, price_per_image=1.0), batch(10)
    )

    assert emulator.stats()["requests"]["submit"] == 3
    assert stats.cost == stats.budget_spent_cost == 3.0
    assert stats.budget_reason == "budget max_cost=3.5 reached (spent about 3 at 1 per image)"
    refused = [r for r in results if r.status == "FAILED"]
    assert len(refused) == 7
    assert all(r.retryable and "budget max_cost=3.5" in (r.error or "") for r in refused)


def test_submits_refused_with_429_give_their_place_back(emulator_factory: Any) -> None:
    """8 submits at once into a bucket of 2: the 429s are retried and not counted as spent."""
    emu = emulator_factory(workers=8, step_time=0.01, rate_limit=2)

    results, stats = run_engine(
        fast_config(emu.url, mode="async", max_concurrency=8, max_new_images=4), batch(8)
    )

    served = emu.stats()
    assert stats.rate_limited > 0
    assert len(served["jobs"]["by_request_key"]) == 4  # every place of the budget was used
    assert sorted(r.status for r in results) == ["COMPLETED"] * 4 + ["FAILED"] * 4
    assert stats.budget_refused == 4


def test_attached_jobs_are_not_new_images(emulator: Any) -> None:
    requests = list(batch(4))
    recorded: dict[str, str] = {}

    def crash(key: str, request_id: str) -> None:
        recorded[key] = request_id
        raise RuntimeError("process died")

    with pytest.raises(RuntimeError):
        run_engine(fast_config(emulator.url, max_concurrency=1), requests[:1], on_submitted=crash)

    results, stats = run_engine(
        fast_config(emulator.url, max_new_images=2), requests, attach=recorded
    )

    statuses = {r.request.key: r.status for r in results}
    assert statuses[requests[0].key] == "COMPLETED"  # attached: polled, not a new image
    assert sorted(statuses.values()) == ["COMPLETED"] * 3 + ["FAILED"]
    assert (stats.attached, stats.submitted, stats.budget_refused) == (1, 2, 1)
    assert emulator.stats()["requests"]["submit"] == 1 + 2


def test_a_budget_of_zero_submits_nothing(emulator: Any) -> None:
    request = GenerationRequest(key="x", prompt="a pier")

    (result,), stats = run_engine(fast_config(emulator.url, max_new_images=0), [request])

    assert result.status == "FAILED"
    assert result.retryable
    assert emulator.stats()["requests"]["submit"] == 0
    assert stats.budget_refused == 1


def test_a_submit_whose_answer_was_lost_counts_as_spent() -> None:
    """Maybe billed: it takes its place in the budget although no request id came back."""
    with hangup_server() as (url, received):
        results, stats = run_engine(
            fast_config(url, max_new_images=1, price_per_image=0.5), batch(3)
        )

    assert [line for line in received if line.startswith("POST")] == [received[0]]
    assert sorted(r.status for r in results) == ["FAILED"] * 3
    assert (stats.submitted, stats.ambiguous_submits, stats.budget_refused) == (0, 1, 2)
    assert (stats.budget_spent_images, stats.budget_spent_cost) == (1, 0.5)
    assert stats.budget_reason == "budget max_new_images=1 reached"

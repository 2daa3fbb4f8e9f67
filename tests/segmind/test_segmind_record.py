"""Ambiguous submits resolved from the account's record, against the emulator's lost answers:
every image stored, each request key submitted once, no FAILED row, and the record read only
for the submits whose fate was unknown."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import pytest

from flux_pipeline.emulator.limits import draw
from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.segmind.history import open_record, row_of, rows_of, windows
from tests.support.loopback import fast_config
from tests.support.segmind_support import Answer, batch, run_engine, scripted_server

#: A lost answer is given up on after this long (the emulator holds it until then).
READ_TIMEOUT = 1.0


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_dropped_submit_answers_are_adopted_from_the_record(
    emulator_factory: Any, mode: str
) -> None:
    emu = emulator_factory(workers=8, step_time=0.01, drop_submit_answers=0.2)
    config = fast_config(emu.url, mode=mode, request_timeout=READ_TIMEOUT, history_grace=0.5)
    requests = list(batch(20))

    results, stats = run_engine(config, requests)

    dropped = emu.stats()["lost_answers"]["dropped"]
    assert dropped > 0
    assert [r.status for r in results] == ["COMPLETED"] * 20
    assert emu.stats()["jobs"]["by_request_key"] == {r.request_key: 1 for r in requests}
    assert (stats.ambiguous_submits, stats.adopted, stats.resubmitted) == (dropped, dropped, 0)
    assert sum(r.recovered_from == "history" for r in results) == dropped
    assert stats.requests["history"] >= dropped


def test_submits_answered_502_after_acceptance_are_posted_once(emulator_factory: Any) -> None:
    emu = emulator_factory(workers=8, step_time=0.01, accept_then_502=0.3)
    requests = list(batch(20))

    results, stats = run_engine(fast_config(emu.url, mode="async"), requests)

    bad_gateway = emu.stats()["lost_answers"]["bad_gateway"]
    assert bad_gateway > 0
    assert [r.status for r in results] == ["COMPLETED"] * 20
    assert emu.stats()["jobs"]["by_request_key"] == {r.request_key: 1 for r in requests}
    assert emu.stats()["requests"]["submit"] == 20
    assert stats.adopted == bad_gateway
    assert stats.requests["history"] == bad_gateway  # one immediate look each


def test_a_healthy_run_never_reads_the_record(emulator: Any) -> None:
    results, stats = run_engine(fast_config(emulator.url), batch(12))

    assert all(r.status == "COMPLETED" and r.recovered_from is None for r in results)
    assert stats.requests["history"] == 0
    assert emulator.stats()["requests"]["history"] == 0


def _seed_losing_only_the_first_answer(request: GenerationRequest) -> int:
    """An emulator seed whose lost-answer draw (rate 0.5) drops the request's first submit
    and answers the second."""
    for seed in range(1000):
        first, second = (
            draw(seed, "lost-answer", "submit", request.request_key, n).random() for n in (0, 1)
        )
        if first < 0.5 <= second:
            return seed
    raise AssertionError("no such seed below 1000")


def test_a_submit_the_record_never_shows_is_sent_again_after_the_grace(
    emulator_factory: Any,
) -> None:
    (request,) = batch(1)
    emu = emulator_factory(
        workers=2,
        step_time=0.01,
        drop_submit_answers=0.5,
        seed=_seed_losing_only_the_first_answer(request),
        history_retention=0.01,  # the record forgets at once: the job is never seen there
    )
    config = fast_config(emu.url, mode="async", request_timeout=READ_TIMEOUT, history_grace=2.0)

    (result,), stats = run_engine(config, [request])

    assert result.status == "COMPLETED"
    assert result.recovered_from is None
    assert emu.stats()["jobs"]["by_request_key"] == {request.request_key: 2}
    assert (stats.ambiguous_submits, stats.adopted, stats.resubmitted) == (1, 0, 1)
    assert stats.requests["history"] >= 2  # looked again until the grace was over


@pytest.mark.parametrize(
    "body",
    [
        [{"request_id": "a"}, {"request_id": "b"}],
        {"data": [{"request_id": "a"}, {"request_id": "b"}], "page": 1},
        {"items": [{"request_id": "a"}, {"request_id": "b"}]},
        {"results": [{"request_id": "a"}, {"request_id": "b"}]},
        {"requests": [{"request_id": "a"}, {"request_id": "b"}, {"no": "id"}]},
        {"data": {"items": [{"request_id": "a"}, {"request_id": "b"}]}},
    ],
)
def test_every_documented_page_shape_is_read(body: object) -> None:
    assert [row["request_id"] for row in rows_of(body)] == ["a", "b"]


def test_one_row_bare_or_under_data_and_windows_of_31_days() -> None:
    assert row_of({"request_id": "a", "model_status": "COMPLETED"}) == {
        "request_id": "a",
        "model_status": "COMPLETED",
    }
    assert row_of({"data": {"request_id": "a"}}) == {"request_id": "a"}
    assert row_of({"error": "Request a not found"}) is None
    spans = list(windows(date(2026, 1, 1), date(2026, 3, 15)))
    assert spans == [
        (date(2026, 2, 13), date(2026, 3, 15)),
        (date(2026, 1, 13), date(2026, 2, 12)),
        (date(2026, 1, 1), date(2026, 1, 12)),
    ]
    assert all((end - start).days + 1 <= 31 for start, end in spans)


def test_listing_splits_long_windows_filters_the_model_exactly_and_deduplicates() -> None:
    """A service answering bare lists: one request listed once per output, another model whose
    slug contains ours; 40 days asked for become two windows of at most 31 days."""
    row = {"model_name": "fast-flux-schnell", "model_status": "COMPLETED"}
    page = [
        {**row, "request_id": "r1", "credits_deduction": 0.0026},
        {**row, "request_id": "r1", "credits_deduction": 0.0026},  # its second output
        {**row, "request_id": "r2", "credits_deduction": 0.0026},
        {**row, "request_id": "r3", "model_name": "fast-flux-schnell-lora"},
    ]

    def script(method: str, path: str) -> Answer:
        return Answer(body=page)

    async def listed(url: str) -> list[str]:
        async with open_record(fast_config(url)) as record:
            return [r.request_id async for r in record.rows(date(2026, 1, 1), date(2026, 2, 9))]

    with scripted_server(script) as (url, received):
        ids = asyncio.run(listed(url))

    assert ids == ["r1", "r2"]
    assert len(received) == 2  # one page per window (a short page is the last)
    assert all(
        "per_page=100" in line and "model_name=fast-flux-schnell" in line for line in received
    )
    assert "from_date=2026-01-10&to_date=2026-02-09" in received[0]
    assert "from_date=2026-01-01&to_date=2026-01-09" in received[1]

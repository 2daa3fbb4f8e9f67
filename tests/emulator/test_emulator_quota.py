"""The per-key account quota over real HTTP: a sliding window of API requests, 429 past it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from flux_pipeline.commands.cli import build_parser, emulator_settings
from flux_pipeline.emulator import EmulatorSettings
from tests.support.emulator_http import (
    POLL_LIMIT,
    SUBMIT_PATH,
    SYNC_PATH,
    TEST_KEY,
    emulator_process,
    submit,
    wait_for_end,
)

OTHER_KEY = "SG_fedcba9876543210"
QUICK = {"prompt": "a lighthouse", "steps": 1}
NO_REFUSALS = {"submit": 0, "status": 0, "result": 0, "sync": 0}


@dataclass(frozen=True)
class Answer:
    """A response and the wall-clock times just before sending and just after the answer."""

    response: httpx.Response
    sent: datetime
    answered: datetime


def _ask(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Answer:
    sent = datetime.now(UTC)
    response = http.request(method, path, **kwargs)
    return Answer(response, sent, datetime.now(UTC))


def _refusal(answer: Answer) -> tuple[int, datetime]:
    """Assert a quota 429 with both headers consistent with each other; (Retry-After, reset)."""
    response = answer.response
    assert response.status_code == 429, response.text
    assert list(response.json()) == ["error"]
    assert "Quota exceeded" in response.json()["error"]
    retry_after = int(response.headers["Retry-After"])
    reset_at = datetime.fromisoformat(response.headers["x-rate-limit-reset-at-utc"])
    assert reset_at.utcoffset() == timedelta(0)
    # Retry-After is the wait rounded up to whole seconds; the reset time is that wait from now.
    assert retry_after - 1 < (reset_at - answer.sent).total_seconds()
    assert (reset_at - answer.answered).total_seconds() <= retry_after + 0.001
    return retry_after, reset_at


def _sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def _wait_for_completed_jobs(emu: Any, count: int) -> None:
    """Wait through the stats endpoint, which no quota counts."""
    deadline = time.monotonic() + POLL_LIMIT
    while emu.stats()["jobs"]["completed"] < count:
        assert time.monotonic() < deadline, "jobs did not complete"
        time.sleep(0.01)


def test_exactly_q_requests_pass_then_each_kind_gets_429_until_the_oldest_leaves(
    emulator_factory: Callable[..., Any],
) -> None:
    emu = emulator_factory(step_time=0.001, quota_per_minute=6)
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        first = _ask(http, "POST", SUBMIT_PATH, json=QUICK)
        job = first.response.json()
        accepted = [
            first.response,
            http.post(SUBMIT_PATH, json=QUICK),
            http.get(job["status_url"]),
            http.get(job["status_url"]),
            http.get(job["response_url"]),
            http.post(SYNC_PATH, json=QUICK),
        ]
        refused = [
            _ask(http, "GET", job["status_url"]),
            _ask(http, "GET", job["response_url"]),
            _ask(http, "POST", SUBMIT_PATH, json=QUICK),
            _ask(http, "POST", SYNC_PATH, json=QUICK),
        ]

    assert [response.status_code for response in accepted] == [200] * 6
    resets = []
    for answer in refused:
        retry_after, reset_at = _refusal(answer)
        assert retry_after in (59, 60)
        resets.append(reset_at)
    # The slot frees when the first request leaves the 60 s window.
    for reset_at in resets:
        assert first.sent + timedelta(seconds=60) <= reset_at + timedelta(milliseconds=5)
        assert reset_at <= first.answered + timedelta(seconds=60, milliseconds=5)
    stats = emu.stats()
    assert stats["quota"] == {
        "limit": 6,
        "counts": "all",
        "window": 60.0,
        "refused": {"submit": 1, "status": 1, "result": 1, "sync": 1},
    }
    assert stats["requests"] == {
        "submit": 3,
        "status": 3,
        "result": 2,
        "output": 0,
        "sync": 2,
        "history": 0,
    }
    assert sum(stats["jobs"]["by_request_key"].values()) == 3  # refused submits made no job


def test_the_window_slides_and_refused_requests_do_not_count(
    emulator_factory: Callable[..., Any],
) -> None:
    """6 requests per 6 s, sent as two batches 3 s apart: the late batch stays in the window
    for about 3 s after the early one left, room for a loaded machine's delays."""
    emu = emulator_factory(step_time=0.001, quota_per_minute=6, quota_window=6.0)
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        # Unknown ids are answered (404), so each of these is an admitted, counted request.
        early = [http.get("/v2/requests/nope/status").status_code for _ in range(3)]
        time.sleep(3.0)
        late = [http.get("/v2/requests/nope/status").status_code for _ in range(3)]
        spent = [_ask(http, "GET", "/v2/requests/nope/status") for _ in range(4)]
        _, first_reset = _refusal(spent[0])
        _sleep_until(first_reset + timedelta(milliseconds=50))
        recovered = [_ask(http, "GET", "/v2/requests/nope/status") for _ in range(4)]

    assert early == late == [404] * 3
    for answer in spent:
        _refusal(answer)
    # The early three have left; the late three are still in the window, so three slots freed
    # (the four refusals in between took none).
    assert [answer.response.status_code for answer in recovered[:3]] == [404] * 3
    _, next_reset = _refusal(recovered[3])
    assert (next_reset - first_reset).total_seconds() >= 2.99  # now the late batch is oldest
    assert emu.stats()["quota"]["refused"] == {**NO_REFUSALS, "status": 5}


def test_submits_mode_lets_polls_results_and_downloads_through(
    emulator_factory: Callable[..., Any],
) -> None:
    emu = emulator_factory(step_time=0.001, quota_per_minute=2, quota_counts="submits")
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        job = submit(http, **QUICK)
        sync = http.post(SYNC_PATH, json=QUICK)
        refused_submit = _ask(http, "POST", SUBMIT_PATH, json=QUICK)
        refused_sync = _ask(http, "POST", SYNC_PATH, json=QUICK)
        done = wait_for_end(http, job["status_url"])
        polls = [http.get(job["status_url"]) for _ in range(5)]
        result = http.get(job["response_url"])
        image = http.get(result.json()["output"])

    assert sync.status_code == 200
    _refusal(refused_submit)
    _refusal(refused_sync)
    assert done.json()["status"] == "COMPLETED"
    assert [poll.status_code for poll in polls] == [200] * 5
    assert result.status_code == 200
    assert image.status_code == 200
    stats = emu.stats()
    assert stats["quota"] == {
        "limit": 2,
        "counts": "submits",
        "window": 60.0,
        "refused": {**NO_REFUSALS, "submit": 1, "sync": 1},
    }
    assert stats["requests"]["status"] >= 6


def test_each_key_has_its_own_quota_and_media_health_and_stats_are_never_refused(
    emulator_factory: Callable[..., Any],
) -> None:
    emu = emulator_factory(step_time=0.001, quota_per_minute=2, api_keys=(TEST_KEY, OTHER_KEY))
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        job = submit(http, **QUICK)
        _wait_for_completed_jobs(emu, 1)
        output = http.get(job["response_url"]).json()["output"]
        refused = _ask(http, "GET", job["status_url"])
        downloads = [http.get(output).status_code for _ in range(3)]
        health = http.get("/healthz")
        stats = http.get("/_emulator/stats")
        other = [
            http.get(job["status_url"], headers={"x-api-key": OTHER_KEY}).status_code,
            http.post(SUBMIT_PATH, json=QUICK, headers={"x-api-key": OTHER_KEY}).status_code,
        ]
        other_refused = _ask(http, "GET", job["status_url"], headers={"x-api-key": OTHER_KEY})

    _refusal(refused)
    assert downloads == [200] * 3
    assert health.status_code == stats.status_code == 200
    assert other == [200, 200]
    _refusal(other_refused)
    assert emu.stats()["quota"]["refused"] == {**NO_REFUSALS, "status": 2}


def test_rate_limit_and_quota_apply_together_and_a_refusal_spends_neither(
    emulator_factory: Callable[..., Any],
) -> None:
    emu = emulator_factory(step_time=0.001, rate_limit=2.0, quota_per_minute=3)
    with httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY}) as http:
        burst = [http.get("/v2/requests/nope/status").status_code for _ in range(2)]
        throttled = http.get("/v2/requests/nope/status")
        reset_at = datetime.fromisoformat(throttled.headers["x-rate-limit-reset-at-utc"])
        _sleep_until(reset_at + timedelta(milliseconds=20))
        third = http.get("/v2/requests/nope/status")
        over_quota = _ask(http, "GET", "/v2/requests/nope/status")

    assert burst == [404, 404]
    assert throttled.status_code == 429
    assert throttled.json() == {"error": "Rate limit exceeded"}
    assert third.status_code == 404  # the throttled request took no quota slot
    _refusal(over_quota)
    assert emu.stats()["quota"]["refused"] == {**NO_REFUSALS, "status": 1}


def test_stats_show_no_quota_by_default(emulator: Any) -> None:
    assert emulator.stats()["quota"] == {
        "limit": None,
        "counts": "all",
        "window": 60.0,
        "refused": NO_REFUSALS,
    }


def test_cli_flags_reach_the_settings() -> None:
    args = build_parser().parse_args(
        [
            "emulator",
            "--quota-per-minute",
            "60",
            "--quota-counts",
            "submits",
            "--quota-window",
            "1.5",
            "--rate-limit",
            "20",
        ]
    )

    settings = emulator_settings(args)

    assert (settings.quota_per_minute, settings.quota_counts, settings.quota_window) == (
        60,
        "submits",
        1.5,
    )
    assert settings.rate_limit == 20.0
    defaults = emulator_settings(build_parser().parse_args(["emulator"]))
    assert (defaults.quota_per_minute, defaults.quota_counts, defaults.quota_window) == (
        None,
        "all",
        60.0,
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--quota-per-minute", "0"], r"^flux-pipeline emulator: quota_per_minute:"),
        (["--quota-window", "0"], r"^flux-pipeline emulator: quota_window:"),
        (["--quota-window", "nan"], r"^flux-pipeline emulator: quota_window:"),
    ],
)
def test_cli_refuses_a_bad_quota_naming_the_field(flags: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        emulator_settings(build_parser().parse_args(["emulator", *flags]))


@pytest.mark.parametrize("flags", [["--quota-counts", "polls"], ["--quota-per-minute", "1.5"]])
def test_cli_rejects_a_malformed_quota_flag(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["emulator", *flags])

    assert exited.value.code == 2
    assert flags[0] in capsys.readouterr().err


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"quota_per_minute": 0}, "quota_per_minute"),
        ({"quota_per_minute": 2.5}, "quota_per_minute"),
        ({"quota_per_minute": True}, "quota_per_minute"),
        ({"quota_counts": "polls"}, "quota_counts"),
        ({"quota_window": 0.0}, "quota_window"),
        ({"quota_window": math.inf}, "quota_window"),
    ],
)
def test_settings_validate_the_quota(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        EmulatorSettings(**changes)  # type: ignore[arg-type]


def test_the_cli_serves_the_quota(tmp_path: Path) -> None:
    flags = ["--quota-per-minute", "1", "--quota-counts", "submits", "--quota-window", "30"]
    log = tmp_path / "emulator.log"
    with (
        emulator_process(log, "--step-time", "0.001", *flags) as base,
        httpx.Client(base_url=base, headers={"x-api-key": TEST_KEY}) as http,
    ):
        accepted = http.post(SYNC_PATH, json=QUICK)
        refused = _ask(http, "POST", SYNC_PATH, json=QUICK)
        quota = http.get("/_emulator/stats").json()["quota"]

    assert accepted.status_code == 200
    retry_after, _ = _refusal(refused)
    assert retry_after in (29, 30)
    assert quota == {
        "limit": 1,
        "counts": "submits",
        "window": 30.0,
        "refused": {**NO_REFUSALS, "sync": 1},
    }
    assert "quota 1 requests (submits) per 30 s per key" in log.read_text()

"""The knobs that make the emulator unlike a well-behaved service: bad media, no metrics, no
v1 endpoint, status URLs on another origin; over real HTTP, and through the CLI."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from flux_pipeline.commands.cli import build_parser, emulator_settings
from flux_pipeline.emulator import EmulatorSettings
from flux_pipeline.emulator.badmedia import HTML_PAGE, PNG_HEADER
from tests.support.emulator_http import SYNC_PATH, TEST_KEY, emulator_process, submit, wait_for_end


def _client(emu: Any) -> httpx.Client:
    return httpx.Client(base_url=emu.url, headers={"x-api-key": TEST_KEY})


def _finished(http: httpx.Client, **params: Any) -> dict[str, Any]:
    job = submit(http, **params)
    wait_for_end(http, job["status_url"])
    result: dict[str, Any] = http.get(job["response_url"]).json()
    return result


def test_oversized_media_streams_a_png_header_then_padding_without_a_length(
    emulator_factory: Any,
) -> None:
    emu = emulator_factory(
        workers=2, step_time=0.001, bad_media="oversized", oversized_bytes=3 << 20
    )
    with _client(emu) as http:
        output = _finished(http)["output"]
        with http.stream("GET", output) as media:
            assert "content-length" not in media.headers
            body = media.read()

    assert body.startswith(PNG_HEADER)
    assert len(body) == 3 << 20


def test_truncated_media_is_half_an_image_with_a_matching_length(emulator_factory: Any) -> None:
    whole = emulator_factory(workers=2, step_time=0.001, output_format="png")
    cut = emulator_factory(workers=2, step_time=0.001, output_format="png", bad_media="truncated")
    bodies = []
    for emu in (whole, cut):
        with _client(emu) as http:
            media = http.get(_finished(http, seed=7)["output"])
            assert int(media.headers["content-length"]) == len(media.content)
            bodies.append(media.content)

    assert len(bodies[1]) == len(bodies[0]) // 2
    assert bodies[0].startswith(bodies[1])


def test_html_bodies_in_media_v1_and_base64_outputs(emulator_factory: Any) -> None:
    emu = emulator_factory(workers=2, step_time=0.001, bad_media="html")
    with _client(emu) as http:
        media = http.get(_finished(http)["output"])
        inline = _finished(http, base64=True)["output"]
        sync = http.post(SYNC_PATH, json={"prompt": "a lighthouse"})

    assert media.headers["content-type"].startswith("text/html")
    assert media.content == HTML_PAGE
    assert base64.b64decode(inline) == HTML_PAGE
    assert sync.status_code == 200
    assert sync.content == HTML_PAGE


def test_bad_media_rate_is_a_seeded_share_of_answers(emulator_factory: Any) -> None:
    def pattern(seed: int) -> list[bool]:
        emu = emulator_factory(
            workers=2, step_time=0.001, bad_media="html", bad_media_rate=0.5, seed=seed
        )
        with _client(emu) as http:
            output = _finished(http, seed=1)["output"]
            return [http.get(output).content == HTML_PAGE for _ in range(24)]

    first = pattern(11)
    assert 0 < sum(first) < 24  # a share, drawn per answer: asking again may get a good one
    assert pattern(11) == first  # reproducible from the seed


def test_no_metrics_leaves_them_out_of_status_and_result_bodies(emulator_factory: Any) -> None:
    emu = emulator_factory(workers=2, step_time=0.001, metrics=False)
    with _client(emu) as http:
        job = submit(http)
        status = wait_for_end(http, job["status_url"]).json()
        result = http.get(job["response_url"]).json()

    assert status["status"] == result["status"] == "COMPLETED"
    assert "metrics" not in status
    assert "metrics" not in result
    assert result["output"].startswith(emu.url)


def test_v2_only_answers_every_v1_post_404_and_counts_it(emulator_factory: Any) -> None:
    emu = emulator_factory(workers=2, step_time=0.001, v2_only=True)
    with _client(emu) as http:
        refused = http.post(SYNC_PATH, json={"prompt": "a lighthouse"})
        accepted = _finished(http)

    assert refused.status_code == 404
    assert accepted["status"] == "COMPLETED"
    stats = emu.stats()
    assert stats["requests"]["sync"] == 1
    assert stats["jobs"]["by_request_key"] != {}  # only the v2 job was accepted
    assert len(stats["jobs"]["by_request_key"]) == 1


def test_status_origin_names_another_origin_in_the_urls(emulator_factory: Any) -> None:
    emu = emulator_factory(workers=2, step_time=0.001, status_origin="http://127.0.0.1:9")
    with _client(emu) as http:
        job = submit(http)
        own = http.get(f"/v2/requests/{job['request_id']}/status").json()

    prefix = f"http://127.0.0.1:9/v2/requests/{job['request_id']}"
    assert (job["status_url"], job["response_url"]) == (f"{prefix}/status", prefix)
    assert own["status_url"] == f"{prefix}/status"


def test_the_cli_flags_become_the_settings() -> None:
    args = build_parser().parse_args(
        [
            *("emulator", "--bad-media", "truncated", "--bad-media-rate", "0.25"),
            *("--oversized-bytes", "4096", "--no-metrics", "--v2-only"),
            *("--status-origin", "http://127.0.0.1:9"),
        ]
    )
    settings = emulator_settings(args)

    assert (settings.bad_media, settings.bad_media_rate, settings.oversized_bytes) == (
        "truncated",
        0.25,
        4096,
    )
    assert (settings.metrics, settings.v2_only) == (False, True)
    assert settings.status_origin == "http://127.0.0.1:9"
    defaults = emulator_settings(build_parser().parse_args(["emulator"]))
    assert (defaults.bad_media, defaults.metrics, defaults.v2_only) == (None, True, False)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"bad_media": "huge"}, "bad_media"),
        ({"bad_media_rate": 1.5}, "bad_media_rate"),
        ({"oversized_bytes": 8}, "oversized_bytes"),
        ({"status_origin": "ftp://x"}, "status_origin"),
    ],
)
def test_impossible_knobs_are_refused_naming_the_field(
    settings: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        EmulatorSettings(**settings)


def test_the_cli_serves_a_v2_only_service_without_metrics(tmp_path: Path) -> None:
    with (
        emulator_process(tmp_path / "emulator.log", "--v2-only", "--no-metrics") as base,
        httpx.Client(base_url=base, headers={"x-api-key": TEST_KEY}) as http,
    ):
        sync = http.post(SYNC_PATH, json={"prompt": "x"})
        result = _finished(http)

    assert sync.status_code == 404
    assert "metrics" not in result

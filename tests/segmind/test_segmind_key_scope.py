"""Where the key goes: the API's origin and https origins of its registrable domain, never
http from an https API, never a media host, never a foreign origin the API names."""

from __future__ import annotations

from typing import Any

import pytest

from flux_pipeline.segmind.history import SEGMIND_HISTORY_ROOT, history_root
from flux_pipeline.segmind.http.key_scope import may_receive_key, registrable_domain
from tests.support.loopback import TEST_KEY, fast_config
from tests.support.segmind_support import (
    Answer,
    accepted,
    batch,
    jpeg,
    recording_server,
    run_engine,
    scripted_server,
)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.segmind.com/v2/requests/r1/status", True),  # the API's own origin
        ("https://queue.segmind.com/v2/requests/r1", True),  # same registrable domain, https
        ("http://queue.segmind.com/v2/requests/r1", False),  # never in clear from https
        ("http://api.segmind.com/v2/requests/r1", False),  # same host, other scheme
        ("https://segmind.com.evil.net/r1", False),
        ("https://evilsegmind.com/r1", False),
        ("https://cdn.example.net/image.jpeg", False),
    ],
)
def test_the_key_rule_for_urls_an_https_api_names(url: str, allowed: bool) -> None:
    assert may_receive_key("https://api.segmind.com", url) is allowed


@pytest.mark.parametrize(
    ("base_url", "root"),
    [
        ("https://api.segmind.com", SEGMIND_HISTORY_ROOT),
        ("https://api.segmind.com/v1", SEGMIND_HISTORY_ROOT),
        ("https://queue.segmind.com/", SEGMIND_HISTORY_ROOT),
        ("http://127.0.0.1:8765/v1", "http://127.0.0.1:8765"),  # an emulator: its own root
        ("https://segmind.com.evil.net", "https://segmind.com.evil.net"),
        ("https://evilsegmind.com/v1", "https://evilsegmind.com"),
    ],
)
def test_the_account_record_root_and_the_key_going_there(base_url: str, root: str) -> None:
    assert history_root(base_url) == root
    assert may_receive_key(base_url.removesuffix("/v1"), root)  # same registrable domain


def test_the_key_rule_on_loopback_and_ip_hosts() -> None:
    base = "http://127.0.0.1:8765"
    assert may_receive_key(base, "http://127.0.0.1:8765/v2/requests/r1")
    assert not may_receive_key(base, "http://127.0.0.1:9999/v2/requests/r1")  # another origin
    assert not may_receive_key(base, "https://127.0.0.2/v2/requests/r1")  # another IP
    assert registrable_domain("10.0.0.1") == "10.0.0.1"
    assert registrable_domain("Queue.Segmind.COM.") == "segmind.com"


def test_a_foreign_status_origin_never_receives_the_key(emulator_factory: Any) -> None:
    with recording_server(404, "application/json", b'{"error": "not here"}') as (foreign, seen):
        emu = emulator_factory(workers=8, step_time=0.02, status_origin=foreign)

        results, stats = run_engine(fast_config(emu.url, mode="async"), batch(12))

    assert [r.status for r in results] == ["COMPLETED"] * 12
    assert seen.keys_seen() == []
    assert seen.requests == []  # its URLs are not followed at all: the documented ones are
    served = emu.stats()["requests"]
    assert served["submit"] == 12
    assert (
        served["result"] + served["status"] == stats.requests["result"] + stats.requests["status"]
    )


def test_a_media_host_is_never_sent_the_key_even_on_the_api_origin() -> None:
    image = jpeg()
    with recording_server(payload=image) as (cdn, media_seen):

        def script(method: str, path: str) -> Answer:
            if method == "POST":
                return accepted(api, "r1")
            return Answer(body={"status": "COMPLETED", "output": f"{cdn}/r1.jpeg"})

        with scripted_server(script) as (api, _received):
            (result,), _stats = run_engine(fast_config(api, prior_step_time=0.0), batch(1))

    assert result.status == "COMPLETED"
    assert result.content == image
    assert [line for line, _ in media_seen.requests] == ["GET /r1.jpeg"]
    assert media_seen.keys_seen() == []
    assert TEST_KEY not in str(media_seen.requests)

"""EngineConfig: impossible values are refused naming the field; the deprecated rate alias."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from flux_pipeline.segmind import EngineConfig
from tests.support.loopback import TEST_KEY


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"deadline": -5}, "deadline"),
        ({"deadline": 0}, "deadline"),
        ({"request_timeout": 0}, "request_timeout"),
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"requests_per_minute": float("nan")}, "requests_per_minute"),
        ({"max_requests_per_second": -1}, "max_requests_per_second"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_retries": -1}, "max_retries"),
        ({"backoff_base": 2.0, "backoff_max": 1.0}, "backoff_max"),
        ({"backoff_base": -0.5}, "backoff_base"),
        ({"mode": "fast"}, "mode"),
        ({"max_new_images": -1}, "max_new_images"),
        ({"max_cost": 5.0}, "max_cost"),  # without price_per_image
        ({"max_cost": 5.0, "price_per_image": -1.0}, "price_per_image"),
    ],
)
def test_impossible_settings_are_refused_naming_the_field(
    settings: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: "):
        EngineConfig(api_key=TEST_KEY, **settings)


def test_the_defaults_are_valid_and_name_no_fixed_quota() -> None:
    config = EngineConfig(api_key=TEST_KEY)

    assert config.mode == "auto"
    assert config.requests_per_minute is None
    assert config.max_requests_per_second is None
    assert config.max_new_images is None
    assert config.max_cost is None


def test_max_requests_per_second_is_a_deprecated_alias_of_requests_per_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="flux_pipeline.segmind")

    config = EngineConfig(api_key=TEST_KEY, max_requests_per_second=2.5)

    assert config.requests_per_minute == 150.0
    assert config.max_requests_per_second is None
    assert any("deprecated" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match=r"^max_requests_per_second: .*requests_per_minute"):
        EngineConfig(api_key=TEST_KEY, max_requests_per_second=2.5, requests_per_minute=60)

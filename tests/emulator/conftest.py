"""Fixtures of the emulator suite."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.emulator_http import TEST_KEY


@pytest.fixture
def client(emulator: Any) -> Iterator[httpx.Client]:
    """An httpx client on the default test emulator, sending ``TEST_KEY``."""
    with httpx.Client(base_url=emulator.url, headers={"x-api-key": TEST_KEY}) as http:
        yield http

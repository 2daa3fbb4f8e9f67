"""Fixtures of the Dagster suite: a small prompt table, a fast emulator, an instance, a runner."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from tests.support.cost_support import service_env
from tests.support.dagster_support import KEY, Runner, make_resources

__all__ = ["service_env"]  # the cost tests' fixture (tests/support/cost_support.py)

#: Six prompts over several aspect ratios and step counts; one seed pinned.
SMALL_TABLE = """prompt_id,prompt,seed,steps,aspect_ratio
fox,"A red fox in fresh snow",,4,1:1
harbor,"Fishing boats in a foggy harbor at dawn",7,2,16:9
tower,"A glass tower reflecting storm clouds",,3,9:16
market,"A spice market under striped awnings",,4,3:2
comet,"A comet over a desert observatory",,1,21:9
garden,"A moss garden with stone lanterns",,2,4:5
"""


@pytest.fixture
def prompts_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The small table, named by ``FLUX_PROMPTS`` for the duration of the test."""
    path = tmp_path / "prompts.csv"
    path.write_text(SMALL_TABLE)
    monkeypatch.setenv("FLUX_PROMPTS", str(path))
    return path


@pytest.fixture
def fast_emulator(emulator_factory: Callable[..., Any]) -> Any:
    """An emulator that accepts :data:`KEY`, with 20 ms steps."""
    return emulator_factory(api_keys=(KEY,), workers=8, step_time=0.02)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A Dagster instance in a temporary ``DAGSTER_HOME``."""
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def runner(
    fast_emulator: Any, storage_root: Path, instance: dg.DagsterInstance, prompts_csv: Path
) -> Runner:
    """Builds against ``fast_emulator`` into a local ``storage_root``, with the small table."""
    return Runner(make_resources(fast_emulator.url, str(storage_root)), instance)

"""SegmindResource: configured engine settings, and the embedded emulator by default."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from flux_pipeline.resources import SegmindResource
from flux_pipeline.segmind.config import EngineConfig, EngineOptions, SegmindSettings
from tests.support.dagster_support import key_from_env
from tests.support.loopback import TEST_KEY
from tests.support.segmind_support import batch, run_engine

#: The test key as the resource takes it: a reference to a variable that holds it.
KEY_REF = key_from_env(TEST_KEY)


def test_configured_fields_become_the_engine_config() -> None:
    resource = SegmindResource(
        api_key=KEY_REF,
        base_url="https://example.test/v1",
        mode="sync",
        max_concurrency=3,
        requests_per_minute=48,
        deadline=42.0,
        max_retries=2,
        max_new_images=5,
        max_cost=9.0,
        price_per_image=0.5,
    )

    config = resource.engine_config()

    assert config.api_key == TEST_KEY
    assert config.base_url == "https://example.test/v1"
    assert (config.mode, config.max_concurrency, config.deadline) == ("sync", 3, 42.0)
    assert (config.requests_per_minute, config.max_retries) == (48, 2)
    assert (config.max_new_images, config.max_cost, config.price_per_image) == (5, 9.0, 0.5)
    assert TEST_KEY not in repr(resource)
    assert TEST_KEY not in repr(config)
    assert SegmindResource(api_key=KEY_REF).engine_config().base_url == "https://api.segmind.com"


def test_the_deprecated_per_second_rate_still_paces_per_minute() -> None:
    config = SegmindResource(api_key=KEY_REF, max_requests_per_second=0.8).engine_config()

    assert config.requests_per_minute == 48.0


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"deadline": -5}, "deadline"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"request_timeout": 0}, "request_timeout"),
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"backoff_base": 2.0, "backoff_max": 1.0}, "backoff_max"),
        ({"max_cost": 5.0}, "max_cost"),
    ],
)
def test_impossible_run_config_fails_at_resource_init_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any], field: str
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    ran: list[bool] = []

    @dg.asset
    def uses_segmind(segmind: SegmindResource) -> None:
        ran.append(True)

    outcome = dg.materialize(
        [uses_segmind],
        resources={"segmind": SegmindResource(api_key=KEY_REF, base_url="http://127.0.0.1:9")},
        run_config={"resources": {"segmind": {"config": settings}}},
        raise_on_error=False,
    )

    assert not outcome.success
    assert ran == []  # refused at resource init, before the step's body ran
    (failure,) = [e for e in outcome.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    message = failure.event_specific_data.error.message  # type: ignore[union-attr]
    assert "validation error for SegmindResource" in message
    assert field in message


def test_an_unknown_mode_is_refused_by_the_config_schema() -> None:
    @dg.asset
    def uses_segmind(segmind: SegmindResource) -> None:
        """Never runs."""

    with pytest.raises(dg.DagsterInvalidConfigError, match="mode"):
        dg.materialize(
            [uses_segmind],
            resources={"segmind": SegmindResource(api_key=KEY_REF)},
            run_config={"resources": {"segmind": {"config": {"mode": "fast"}}}},
        )


def test_without_key_or_url_a_run_uses_the_embedded_emulator_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    seen: dict[str, Any] = {}

    @dg.asset
    def few_images(segmind: SegmindResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
        config = segmind.engine_config()
        _results, stats = run_engine(config, batch(3))
        seen["url"] = config.base_url
        return dg.MaterializeResult(metadata={"completed": stats.completed})

    instance = dg.DagsterInstance.ephemeral()
    outcome = dg.materialize(
        [few_images], resources={"segmind": SegmindResource(emulator_workers=4)}, instance=instance
    )

    assert outcome.success
    metadata = outcome.asset_materializations_for_node("few_images")[0].metadata
    assert metadata["completed"].value == 3
    assert seen["url"].startswith("http://127.0.0.1:")
    warnings = [  # in the run's own log, as the UI shows it
        entry
        for entry in instance.all_logs(outcome.run_id)
        if entry.level == logging.WARNING and "SYNTHETIC" in entry.user_message
    ]
    assert len(warnings) == 1
    with pytest.raises(httpx.ConnectError):  # stopped at teardown
        httpx.get(seen["url"] + "/healthz", timeout=2)


def test_a_configured_resource_starts_no_emulator(emulator: Any) -> None:
    resource = SegmindResource(api_key=KEY_REF, base_url=emulator.url)
    with dg.build_resources({"segmind": resource}) as built:
        config = built.segmind.engine_config()
        results, _ = run_engine(config, batch(2))

    assert config.base_url == emulator.url
    assert [r.status for r in results] == ["COMPLETED", "COMPLETED"]


def test_the_quota_comes_from_the_environment_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMIND_REQUESTS_PER_MINUTE", raising=False)
    resource = SegmindResource(api_key=KEY_REF, base_url="http://127.0.0.1:9")
    assert resource.engine_config().requests_per_minute is None

    monkeypatch.setenv("SEGMIND_REQUESTS_PER_MINUTE", " 120 ")  # read when the run starts
    assert resource.engine_config().requests_per_minute == 120.0

    configured = SegmindResource(api_key=KEY_REF, requests_per_minute=30)
    assert configured.engine_config().requests_per_minute == 30.0  # the field wins
    deprecated = SegmindResource(api_key=KEY_REF, max_requests_per_second=0.5)
    assert deprecated.engine_config().requests_per_minute == 30.0


@pytest.mark.parametrize("value", ["fast", "0", "-5", "nan", "inf"])
def test_an_invalid_environment_quota_fails_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("SEGMIND_REQUESTS_PER_MINUTE", value)

    @dg.asset
    def uses_segmind(segmind: SegmindResource) -> None:
        segmind.engine_config()

    outcome = dg.materialize(
        [uses_segmind],
        resources={"segmind": SegmindResource(api_key=KEY_REF, base_url="http://127.0.0.1:9")},
        raise_on_error=False,
    )

    assert not outcome.success
    (failure,) = [e for e in outcome.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data)
    assert "SEGMIND_REQUESTS_PER_MINUTE must be a positive number" in message
    assert repr(value) in message
    assert TEST_KEY not in message


def test_the_resource_fields_are_the_core_declarations() -> None:
    """One declaration of each field: the resource's fields are SegmindSettings', and the
    engine takes every option the resource has."""
    fields = SegmindResource.model_fields
    declared = SegmindSettings.model_fields
    assert set(fields) == set(declared)
    for name, info in declared.items():
        assert fields[name].default == info.default, name
        assert fields[name].metadata == info.metadata, name
        assert fields[name].description == info.description, name
    assert set(EngineOptions.model_fields) <= set(EngineConfig.model_fields)
    assert set(EngineOptions.model_fields) <= set(fields)


def test_a_field_past_its_declared_bound_is_refused_in_code_naming_it() -> None:
    with pytest.raises(ValueError, match="max_image_bytes"):
        SegmindResource(api_key=KEY_REF, max_image_bytes=10)


def test_a_literal_key_in_code_is_refused_saying_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"api_key\n.*never the key itself") as refused:
        SegmindResource(api_key=TEST_KEY, base_url="http://127.0.0.1:9")  # type: ignore[arg-type]

    assert "SEGMIND_API_KEY" in str(refused.value)
    assert TEST_KEY not in str(refused.value)
    for wrong in ({"env": TEST_KEY}, {"env": "A B"}, {"name": "X"}, {"env": "X", "more": "Y"}):
        with pytest.raises(ValueError, match="api_key") as refused:
            SegmindResource(api_key=wrong)
        assert TEST_KEY not in str(refused.value)


def test_the_key_is_read_from_the_referenced_variable_at_run_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resource = SegmindResource(api_key={"env": "FLUX_TEST_OTHER_KEY"}, base_url="http://x.test")
    monkeypatch.delenv("FLUX_TEST_OTHER_KEY", raising=False)
    with pytest.raises(ValueError, match="FLUX_TEST_OTHER_KEY, which is not set"):
        resource.engine_config()  # a named variable never falls back to the emulator

    monkeypatch.setenv("FLUX_TEST_OTHER_KEY", TEST_KEY)
    assert resource.engine_config().api_key == TEST_KEY
    assert resource.key_variable == "FLUX_TEST_OTHER_KEY"
    assert KEY_REF.env_var_name in SegmindResource(api_key=KEY_REF).key_variable


def test_run_config_takes_the_key_as_a_reference_and_refuses_a_literal_before_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUX_TEST_OTHER_KEY", TEST_KEY)
    seen: list[str] = []

    @dg.asset
    def uses_segmind(segmind: SegmindResource) -> None:
        seen.append(segmind.engine_config().api_key)

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        reference = {"api_key": {"env": "FLUX_TEST_OTHER_KEY"}, "base_url": "http://x.test"}
        assert dg.materialize(
            [uses_segmind],
            resources={"segmind": SegmindResource()},
            run_config={"resources": {"segmind": {"config": reference}}},
            instance=instance,
        ).success
        assert seen == [TEST_KEY]
        [run] = instance.get_runs()
        assert TEST_KEY not in repr(run.run_config)

        with pytest.raises(dg.DagsterInvalidConfigError, match="api_key must be dict") as refused:
            dg.materialize(
                [uses_segmind],
                resources={"segmind": SegmindResource()},
                run_config={"resources": {"segmind": {"config": {"api_key": TEST_KEY}}}},
                instance=instance,
            )
        assert TEST_KEY not in str(refused.value)
        assert len(instance.get_runs()) == 1  # refused before a run was created

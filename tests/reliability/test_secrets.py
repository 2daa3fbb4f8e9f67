"""The API key never leaves the ``x-api-key`` header: not in logs, events, metadata, files, errors.

A whole partition (prompt table, images, checks, metrics) runs through Dagster ``materialize()``
with a recognisable key, then a run with a wrong, equally recognisable key fails on the 401.
Each is searched for everywhere a secret could end up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from flux_pipeline.emulator.app import MISSING_KEY
from flux_pipeline.protocol import MODEL
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.storage import ObjectStore
from tests.support.reliability_support import PARTITION, write_table
from tests.support.secrets import files_containing

KEY = "SG_5ec7e75ec7e75ec7"
WRONG_KEY = "SG_0badc0de0badc0de"
SECRETS = (KEY, WRONG_KEY)
FROM_ENV = dg.EnvVar("SEGMIND_API_KEY")


def run_texts(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> list[str]:
    """Every event of the run as the event log stores it, plus every error message and cause."""
    texts = [dg.serialize_value(entry) for entry in instance.all_logs(result.run_id)]
    for event in result.all_events:
        texts.append(repr(event))
        error = event.step_failure_data.error if event.is_step_failure else None
        while error is not None:
            texts += [error.message, *error.stack]
            error = error.cause
    return texts


def assert_secret_free(texts: list[str], where: str) -> None:
    leaks = [t for t in texts if any(s in t for s in SECRETS)]
    assert leaks == [], f"the API key leaked into {where}: {leaks[:3]}"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        yield instance


def materialize(
    selection: list[str],
    instance: dg.DagsterInstance,
    url: str,
    root: Path,
    api_key: dg.EnvVar = FROM_ENV,
    **kw: Any,
) -> dg.ExecuteInProcessResult:
    """The code location's assets and checks; by default with the resources ``definitions.py``
    builds (the key read from ``SEGMIND_API_KEY`` at run time)."""
    from flux_pipeline.assets import (
        generated_images,
        generated_images_checks,
        generation_metrics,
        prompt_table,
    )
    from flux_pipeline.resources import ObjectStoreResource, SegmindResource

    resources = {
        "segmind": SegmindResource(api_key=api_key, base_url=url),
        "storage": ObjectStoreResource(root=str(root)),
    }
    return dg.materialize(
        [prompt_table, generated_images, generation_metrics, *generated_images_checks],
        selection=selection,
        resources=resources,
        instance=instance,
        raise_on_error=False,
        **kw,
    )


@pytest.mark.slow
def test_the_api_key_appears_nowhere_after_a_good_and_a_refused_run(
    *,
    emulator_factory: Callable[..., Any],
    home: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    emu = emulator_factory(api_keys=(KEY,), workers=8, step_time=0.01)
    root = tmp_path / "data"
    monkeypatch.setenv("FLUX_PROMPTS", str(write_table(tmp_path / "t.csv", 8, nsfw=1)))
    monkeypatch.setenv("SEGMIND_API_KEY", KEY)

    results = [
        materialize(["prompt_table"], home, emu.url, root),
        materialize(["generated_images"], home, emu.url, root, partition_key=PARTITION),
        materialize(["generation_metrics"], home, emu.url, root),
    ]
    assert all(r.success for r in results)
    lineage = read_lineage(ObjectStore.from_uri(str(root)))
    assert sorted(lineage["status"]) == ["COMPLETED"] * 7 + ["FAILED"]
    assert emu.stats()["requests"]["submit"] == 8  # the key really was used and accepted

    # the wrong key, named through another variable this time (dg.EnvVar in code)
    monkeypatch.setenv("FLUX_TEST_WRONG_KEY", WRONG_KEY)
    refused = materialize(
        ["generated_images"],
        home,
        emu.url,
        root,
        dg.EnvVar("FLUX_TEST_WRONG_KEY"),
        partition_key="2026-11-21",
    )
    assert not refused.success
    failure = "\n".join(t for t in run_texts(refused, home) if "refused the API key" in t)
    assert "HTTP 401" in failure
    assert "SEGMIND_API_KEY" in failure  # the message says which setting to fix...

    # ...and no trace of either key anywhere
    for result in (*results, refused):
        assert_secret_free(run_texts(result, home), f"the event log of run {result.run_id}")
        for materialization in result.get_asset_materialization_events():
            metadata = materialization.materialization.metadata
            assert_secret_free([repr(v.value) for v in metadata.values()], "metadata")
    assert_secret_free([str(v) for v in lineage.astype(str).to_numpy().ravel()], "lineage")
    records = [r.getMessage() for r in caplog.records]
    records += [logging.Formatter().format(r) for r in caplog.records if r.exc_info]
    assert len(records) > 10
    assert_secret_free(records, "log records")
    out, err = capfd.readouterr()
    assert_secret_free([out, err], "stdout/stderr")
    assert files_containing(root, SECRETS) == []
    assert files_containing(Path(home.root_directory), SECRETS) == []
    # the searches above do look where texts are kept
    assert any("images to build" in t for t in run_texts(results[1], home))
    assert files_containing(Path(home.root_directory), ("refused the API key",))
    assert files_containing(root, ("a lighthouse on cliff 7 NSFW",))  # in Parquet and ledger


def test_the_emulator_refuses_requests_without_a_valid_key(
    emulator_factory: Callable[..., Any],
) -> None:
    emu = emulator_factory(api_keys=(KEY,), step_time=0.01)
    body = {"prompt": "a lighthouse", "steps": 1}
    with httpx.Client(base_url=emu.url, trust_env=False) as api:
        missing = api.post(f"/v2/{MODEL}", json=body)
        wrong = api.post(f"/v2/{MODEL}", json=body, headers={"x-api-key": WRONG_KEY})
    assert (missing.status_code, missing.json()) == (401, {"error": MISSING_KEY})
    assert (wrong.status_code, wrong.json()) == (401, {"error": MISSING_KEY})
    assert emu.stats()["jobs"]["by_request_key"] == {}

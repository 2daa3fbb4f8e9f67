"""Helpers of the Dagster suite: resources, an in-process runner, result accessors."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import dagster as dg

KEY = "SG_00112233aabbccdd"
PARTITION = "2026-11-20"


def key_from_env(key: str = KEY) -> dg.EnvVar:
    """``key`` as the resource takes a key: a reference to a variable of this process that
    holds it (child processes inherit it), named by a digest so the name never shows the key."""
    name = "FLUX_TEST_KEY_" + hashlib.sha256(key.encode()).hexdigest()[:12].upper()
    os.environ[name] = key
    return dg.EnvVar(name)


def make_resources(base_url: str, root: str, api_key: str = KEY) -> dict[str, Any]:
    """The two resources, pointed at an emulator and a storage root."""
    from flux_pipeline.resources import ObjectStoreResource, SegmindResource

    return {
        "segmind": SegmindResource(api_key=key_from_env(api_key), base_url=base_url),
        "storage": ObjectStoreResource(root=root),
    }


class Runner:
    """Materializes the code location's assets (and their checks) in-process."""

    def __init__(self, resources: dict[str, Any], instance: dg.DagsterInstance) -> None:
        self.resources = resources
        self.instance = instance

    def _materialize(self, selection: Any, **kwargs: Any) -> dg.ExecuteInProcessResult:
        from flux_pipeline.assets import (
            attribute_metrics,
            generated_images,
            generated_images_checks,
            generation_metrics,
            near_duplicates,
            prompt_table,
        )

        return dg.materialize(
            [
                *(prompt_table, generated_images, near_duplicates),
                *(generation_metrics, attribute_metrics, *generated_images_checks),
            ],
            selection=selection,
            resources=self.resources,
            instance=self.instance,
            raise_on_error=False,
            **kwargs,
        )

    def prompt_table(self) -> dg.ExecuteInProcessResult:
        return self._materialize(["prompt_table"])

    def partition(self, key: str = PARTITION) -> dg.ExecuteInProcessResult:
        """``generated_images`` for one partition, with its four checks."""
        return self._materialize(["generated_images"], partition_key=key)

    def range(self, first: str, last: str) -> dg.ExecuteInProcessResult:
        """``generated_images`` for the partitions ``first`` to ``last`` in one run (as a
        backfill run of several partitions is tagged), with its four checks."""
        return self._materialize(
            ["generated_images"],
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
            },
        )

    def range_checks(self, first: str, last: str) -> dg.ExecuteInProcessResult:
        """Only the checks of ``generated_images``, for the partitions ``first`` to ``last``
        in one run."""
        return self._materialize(
            dg.AssetSelection.checks_for_assets("generated_images"),
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
            },
        )

    def checks(self, key: str = PARTITION) -> dg.ExecuteInProcessResult:
        """Only the checks of ``generated_images`` for one partition.

        A checks-only selection has no asset to take a partitions definition from, so
        ``partition_key=`` is refused; the partition tag is what the step context reads.
        """
        return self._materialize(
            dg.AssetSelection.checks_for_assets("generated_images"),
            tags={"dagster/partition": key},
        )

    def metrics(self) -> dg.ExecuteInProcessResult:
        return self._materialize(["generation_metrics"])

    def job(self, key: str = PARTITION) -> dg.ExecuteInProcessResult:
        """The ``synthetic_build`` job of the code location for one partition."""
        from flux_pipeline.assets import (
            attribute_metrics,
            generated_images,
            generated_images_checks,
            generation_metrics,
            near_duplicates,
            prompt_table,
            synthetic_build,
        )

        defs = dg.Definitions(
            assets=[
                *(prompt_table, generated_images, near_duplicates),
                *(generation_metrics, attribute_metrics),
            ],
            asset_checks=generated_images_checks,
            jobs=[synthetic_build],
            resources=self.resources,
        )
        return defs.resolve_job_def("synthetic_build").execute_in_process(
            partition_key=key, instance=self.instance, raise_on_error=False
        )


def checks_by_name(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {
        evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()
    }


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in materialization.metadata.items()}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """Every step failure's message (and its cause's) as one string."""
    parts: list[str] = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            error = event.step_failure_data.error
            while error is not None:
                parts.append(error.message)
                error = error.cause
    return "\n".join(parts)

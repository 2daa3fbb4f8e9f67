"""The Dagster code location (``flux_pipeline.definitions:defs``): assembly only.

Resources follow the environment: ``SEGMIND_API_KEY`` / ``SEGMIND_BASE_URL`` point the engine at
Segmind (or any compatible server); with neither set, the resource starts the embedded emulator.
``FLUX_STORAGE_ROOT`` (default ``./data``) is the object store every asset reads and writes.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from flux_pipeline.assets import (
    generated_images,
    generated_images_checks,
    generation_metrics,
    prompt_table,
    synthetic_build,
    synthetic_build_schedule,
)
from flux_pipeline.resources import ObjectStoreResource, SegmindResource
from flux_pipeline.storage import DEFAULT_ROOT


def _segmind() -> SegmindResource:
    """The real API when its variables are set (read at run time), else the embedded emulator."""
    settings: dict[str, Any] = {
        field: dg.EnvVar(variable)
        for field, variable in (("api_key", "SEGMIND_API_KEY"), ("base_url", "SEGMIND_BASE_URL"))
        if os.environ.get(variable)
    }
    return SegmindResource(**settings)


defs = dg.Definitions(
    assets=[prompt_table, generated_images, generation_metrics],
    asset_checks=generated_images_checks,
    jobs=[synthetic_build],
    schedules=[synthetic_build_schedule],
    resources={
        "segmind": _segmind(),
        "storage": ObjectStoreResource(root=os.environ.get("FLUX_STORAGE_ROOT", DEFAULT_ROOT)),
    },
)

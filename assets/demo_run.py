"""One partition of ``synthetic_build``, run in this process: what ``flux-pipeline demo`` runs.

The command (:mod:`flux_pipeline.commands.demo`) imports this module only when it runs, so the
core never imports Dagster itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

#: Run log at INFO: the build's progress lines and the check results, not Dagster's DEBUG events.
_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass(frozen=True)
class DemoRun:
    """How the run went: ``failure`` says why it failed (None: it succeeded); ``metadata`` is
    the partition's materialization metadata and ``checks`` each check's ``(name, passed)``."""

    failure: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    checks: list[tuple[str, bool]] = field(default_factory=list)


def run_synthetic_build(partition: str) -> DemoRun:
    """Execute ``synthetic_build`` for ``partition`` on the instance of ``DAGSTER_HOME`` (an
    ephemeral one without it)."""
    from flux_pipeline.definitions import defs

    instance = (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )
    job = defs.resolve_job_def("synthetic_build")
    result = job.execute_in_process(
        partition_key=partition, instance=instance, run_config=_RUN_CONFIG, raise_on_error=False
    )
    if not result.success:
        failure = result.failure_data_for_node("generated_images") or result.failure_data_for_node(
            "prompt_table"
        )
        reason = failure.error.message.strip() if failure and failure.error else "see the run log"
        return DemoRun(failure=reason)
    materialization = result.asset_materializations_for_node("generated_images")[-1]
    return DemoRun(
        failure=None,
        metadata={k: v.value for k, v in materialization.metadata.items()},
        checks=[(c.check_name, c.passed) for c in result.get_asset_check_evaluations()],
    )

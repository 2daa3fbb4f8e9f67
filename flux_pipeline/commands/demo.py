"""``flux-pipeline demo``: build today's partition of the bundled sample through Dagster.

Dagster runs in :mod:`flux_pipeline.assets.demo_run`, imported inside :func:`run_demo`: the
core never imports Dagster.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from flux_pipeline.settings.environment import FLUX_PROMPTS


def add_parser(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``flux-pipeline demo``."""
    parser = subcommands.add_parser(
        "demo",
        help="materialize one partition through Dagster (the embedded emulator by default)",
        description=(
            "Run the synthetic_build job for one day: validate the prompt table (FLUX_PROMPTS "
            "or the bundled sample), generate its images and lineage under FLUX_STORAGE_ROOT, "
            "and run the asset checks. Without SEGMIND_API_KEY or SEGMIND_BASE_URL the images "
            "come from the embedded emulator and are synthetic."
        ),
    )
    parser.add_argument(
        "--partition",
        default=None,
        metavar="YYYY-MM-DD",
        help="partition to build (default: today, UTC)",
    )
    parser.set_defaults(handler=lambda args: run_demo(args.partition))


def run_demo(partition: str | None = None) -> int:
    """Run ``synthetic_build`` for ``partition`` (default today, UTC); print where things landed.

    A prompt table with problems is reported as its list of problems before any run starts
    (exit 1, no traceback); a run launched from the UI shows the same list in its run log.
    """
    from flux_pipeline.prompts import PromptTableError, load_prompt_table

    try:
        load_prompt_table(FLUX_PROMPTS.read())
    except PromptTableError as err:
        print(f"demo: nothing was built. {err}", file=sys.stderr)
        return 1

    from flux_pipeline.assets.demo_run import run_synthetic_build

    partition = partition or datetime.now(UTC).date().isoformat()
    run = run_synthetic_build(partition)
    if run.failure is not None:
        print(f"\ndemo failed (partition {partition}): {run.failure}")
        return 1
    print(_summary(partition, run.metadata, run.checks))
    return 0


def _summary(partition: str, meta: dict[str, Any], checks: Sequence[tuple[str, bool]]) -> str:
    passed = sum(1 for _, ok in checks if ok)
    failed_checks = ", ".join(name for name, ok in checks if not ok)
    return "\n".join(
        [
            "",
            f"backend: {meta['backend']}",
            f"images:  {meta['images']}",
            f"lineage: {meta['lineage']}",
            f"partition {partition}: {meta['completed']} images completed, {meta['failed']} "
            f"failed, {meta['reused']} reused from storage; {meta['api_requests']} API requests "
            f"in {meta['elapsed_s']}s",
            _inference_line(meta),
            f"asset checks: {passed}/{len(checks)} passed"
            + (f" (failed: {failed_checks})" if failed_checks else ""),
        ]
    )


def _inference_line(meta: dict[str, Any]) -> str:
    p50, p95 = meta["inference_time_p50_s"], meta["inference_time_p95_s"]
    if p50 is None:
        return "inference_time: none generated for this partition (all made for other ones)"
    return f"inference_time p50 {p50}s, p95 {p95}s"

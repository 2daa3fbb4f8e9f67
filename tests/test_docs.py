"""The README stays short and every public name it used to document is still documented.

The README is what a newcomer reads first, so it is held to 250 lines; reference material
lives in docs/. This test fails when a contract name (an environment variable, a CLI flag, an
asset, a lineage column, a resource field) or a key promise disappears from README.md and
every page under docs/, or when a README link names a section that does not exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

# Pages this README links whose content other work writes; they may be absent on a branch.
PAGES_WRITTEN_ELSEWHERE = {
    "docs/CONFIGURATION.md",
    "docs/DATASETS.md",
    "docs/QUALITY.md",
    "docs/RECORDS.md",
    "docs/TESTING.md",
}

ENV_VARIABLES = [
    "SEGMIND_API_KEY",
    "SEGMIND_BASE_URL",
    "SEGMIND_REQUESTS_PER_MINUTE",
    "FLUX_STORAGE_ROOT",
    "FLUX_PROMPTS",
    "FLUX_PARTITION_START",
    "FLUX_MAX_PARTITIONS_PER_RUN",
    "FLUX_RUN_LEASE",
    "FLUX_RUN_MONITOR_INTERVAL",
    "FLUX_MAX_FAILURE_RATE",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "DAGSTER_HOME",
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
]

CLI = [
    "make demo",
    "make test",
    "make ui",
    "make emulator",
    "make bench",
    "make lock",
    "flux-pipeline demo --partition",
    "flux-pipeline emulator",
    "flux-pipeline plan --partition",
    "--partition-range",
    "--price-per-image",
    "--backfill",
    "flux-pipeline export webdataset",
    "flux-pipeline export imagefolder",
    "--include-synthetic",
    "--max-shard-bytes",
    "--keep-duplicates",
    "--workers",
    "--step-time",
    "--fault-rate",
    "--retention",
    "--latency",
    "--rate-limit",
    "--quota-per-minute",
    "--quota-counts all|submits",
    "--quota-window",
    "--credits",
    "--seed",
    "--bad-media oversized|truncated|html",
    "--bad-media-rate",
    "--oversized-bytes",
    "--no-metrics",
    "--v2-only",
    "--status-origin",
    "/_emulator/stats",
]

DAGSTER_NAMES = [
    "flux_pipeline.definitions",
    "prompt_table",
    "generated_images",
    "generation_metrics",
    "one_row_per_prompt",
    "images_match_sha256",
    "failure_rate_below_threshold",
    "lineage_schema_as_declared",
    "synthetic_build",
    "synthetic_build_daily",
    "flux_dead_runs",
    "PoolQueuedRunCoordinator",
    "segmind",
    "run_retries",
    "max_partitions_per_run",
]

LINEAGE_COLUMNS = [
    "partition", "prompt_id", "prompt", "seed", "steps", "aspect_ratio", "model", "request_id",
    "status", "error", "inference_time", "queue_time", "cost", "attempts", "submitted_at",
    "completed_at", "image_uri", "image_sha256", "image_bytes", "content_type", "width",
    "height", "request_key", "cached", "backend",
]  # fmt: skip

RESOURCE_FIELDS = [
    "api_key",
    "base_url",
    "model",
    "mode",
    "max_concurrency",
    "requests_per_minute",
    "max_requests_per_second",
    "max_new_images",
    "max_cost",
    "price_per_image",
    "request_timeout",
    "deadline",
    "max_retries",
    "backoff_base",
    "backoff_max",
    "base64",
    "max_image_bytes",
    "repost_ambiguous_submits",
    "emulator_workers",
]

METADATA_KEYS = [
    "backend",
    "reused",
    "http_requests",
    "api_requests",
    "media_downloads",
    "retried_requests",
    "reported_cost",
    "mode_used",
    "requests_per_image",
    "quota_share",
    "run_new_images",
    "run_cost",
    "storage_requests",
    "storage_requests_per_image",
    "images_read_back",
    "unexpected_sizes",
    "ambiguous_submits",
    "cost_to_date",
    "preview_rows",
]

PROMISES = [
    # exactly once, claims, resumption
    "`cached = true` only when its image was generated for",
    "If-None-Match: *",
    "O_EXCL",
    "_claims/",
    "_ledger/",
    "_runs/{run_id}.json",
    "a run never submits past",
    "not re-POSTed",
    "ModelNotFound",
    "StorageError",
    "NotImplementedError",
    # whole images, atomic writes
    "written atomically",
    "16 megapixels",
    "max_image_bytes",
    "metadata.jsonl",
    # the key
    "x-api-key",
    "registrable domain",
    "Redirects are never followed",
    "environment reference",
    # recovery
    "retry_on_asset_or_op_failure: false",
    "COMPLETED_SUCCESS",
    "COMPLETED_FAILED",
    # installing
    "uv.lock",
    "uv lock --check",
    "UV_VERSION",
    "--inexact",
    "PYTEST_WORKERS",
    "quiet",
    # deploying
    "scheme: postgresql+psycopg2",
    "K8sRunLauncher",
    "dagster instance concurrency set segmind",
    # reading the results
    "hive_partitioning = true",
    "union_by_name = true",
    'load_dataset("imagefolder"',
    "wds.WebDataset",
    "manifest.json",
    "fsspec.open(image_uri)",
]

HISTORY = re.compile(
    r"before this (release|change)|previous (release|engine)|the old policy|"
    r"releases? ago|start of the last release|the issue measured|an earlier version",
    re.IGNORECASE,
)


def _pages() -> dict[str, str]:
    pages = {"README.md": README.read_text(encoding="utf-8")}
    for page in sorted(DOCS.glob("*.md")):
        pages[f"docs/{page.name}"] = page.read_text(encoding="utf-8")
    return pages


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE)
    return {_slug(heading) for heading in headings}


def test_readme_is_at_most_250_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move reference material to docs/"


@pytest.mark.parametrize(
    "name",
    ENV_VARIABLES + CLI + DAGSTER_NAMES + RESOURCE_FIELDS + METADATA_KEYS + PROMISES,
)
def test_every_name_and_promise_is_documented(name: str) -> None:
    pages = {page: " ".join(text.split()) for page, text in _pages().items()}
    assert any(name in text for text in pages.values()), (
        f"{name!r} is documented in none of {sorted(pages)}"
    )


def test_every_lineage_column_is_documented() -> None:
    text = " ".join(" ".join(_pages().values()).split())
    assert ", ".join(LINEAGE_COLUMNS) in text, (
        "the lineage columns, in order, are documented nowhere"
    )


def test_reference_pages_carry_no_history() -> None:
    for name, text in _pages().items():
        found = HISTORY.findall(text)
        assert not found, f"{name} describes history ({found}); state the latest figure instead"


def test_readme_keeps_make_test_as_its_test_command() -> None:
    assert "make test" in README.read_text(encoding="utf-8")


def test_links_between_pages_resolve() -> None:
    """Every relative link of README.md and docs/*.md names a page, and a heading in it."""
    checked = 0
    for name, text in _pages().items():
        base = (ROOT / name).parent
        for path, anchor in re.findall(r"\]\(([\w./-]+\.md)(?:#([^)]+))?\)", text):
            target = (base / path).resolve()
            relative = target.relative_to(ROOT).as_posix()
            checked += 1
            if not target.exists():
                assert relative in PAGES_WRITTEN_ELSEWHERE, f"{name} links {path}: no such page"
                continue
            if anchor:
                assert anchor in _anchors(target), f"{name} links {path}#{anchor}: no such heading"
    assert checked, "no page links another"


def test_performance_figures_name_their_command_and_date() -> None:
    text = (DOCS / "PERFORMANCE.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    assert sections
    for section in sections:
        title = section.splitlines()[0]
        assert re.search(r"\d{4}-\d{2}-\d{2}", section), f"PERFORMANCE.md '{title}' has no date"
        assert re.search(r"python -m bench|pytest|make demo|\.ci/run", section), (
            f"PERFORMANCE.md '{title}' names no command"
        )

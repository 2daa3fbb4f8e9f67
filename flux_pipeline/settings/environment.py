"""Every environment variable the project reads, declared once: read each with ``.read()``.

Add one here as ``NAME: Final[Variable[float]] = Variable("NAME", float, default, "help",
ge=..., le=...)``, use ``NAME.read()`` where it applies, and regenerate the reference page
(``python -m flux_pipeline.commands.config_docs``).
"""

from __future__ import annotations

from typing import Any, Final

from flux_pipeline.settings.variables import Variable

SEGMIND_API_KEY: Final[Variable[str | None]] = Variable(
    "SEGMIND_API_KEY",
    str,
    None,
    "Segmind API key, read by the process that runs a step when the run starts; sent only in "
    "the x-api-key header. Unset together with SEGMIND_BASE_URL: the embedded emulator.",
    secret=True,
)
SEGMIND_BASE_URL: Final[Variable[str | None]] = Variable(
    "SEGMIND_BASE_URL",
    str,
    None,
    "API root, read when the run starts; https://api.segmind.com when only the key is set, "
    "and a trailing /v1 is fine.",
)
SEGMIND_REQUESTS_PER_MINUTE: Final[Variable[float | None]] = Variable(
    "SEGMIND_REQUESTS_PER_MINUTE",
    float,
    None,
    "The account's quota, read when the run starts, used when the segmind resource's "
    "requests_per_minute is unset. Unset: no fixed cap, only AIMD on 429 answers.",
    gt=0,
    unit="API requests per minute",
)
FLUX_STORAGE_ROOT: Final[Variable[str]] = Variable(
    "FLUX_STORAGE_ROOT",
    str,
    "./data",
    "fsspec URI of the object store every asset reads and writes (a folder or "
    "s3://bucket/prefix), read when the code location loads and by the CLI's tools.",
)
FLUX_PROMPTS: Final[Variable[str | None]] = Variable(
    "FLUX_PROMPTS",
    str,
    None,
    "Path or URI of the prompt table (CSV or Parquet) prompt_table validates; unset: the "
    "bundled sample.",
)
FLUX_PARTITION_START: Final[Variable[str]] = Variable(
    "FLUX_PARTITION_START",
    str,
    "2026-01-01",
    "First daily partition (YYYY-MM-DD) of generated_images, read when the code loads.",
)
FLUX_MAX_PARTITIONS_PER_RUN: Final[Variable[int]] = Variable(
    "FLUX_MAX_PARTITIONS_PER_RUN",
    int,
    31,
    "Partitions one backfill run builds at most (with one engine), read when the code loads.",
    ge=1,
)
FLUX_MAX_FAILURE_RATE: Final[Variable[float]] = Variable(
    "FLUX_MAX_FAILURE_RATE",
    float,
    0.05,
    "Share of FAILED images a partition may hold before its failure-rate check fails, read "
    "when the check runs.",
    ge=0,
    le=1,
)
FLUX_BLANK_LUMA_STD: Final[Variable[float]] = Variable(
    "FLUX_BLANK_LUMA_STD",
    float,
    2.0,
    "An image whose luminance spread (lineage luma_std, 0..255) is below this is blank: it stays "
    "COMPLETED, and exports leave it out. Read when a build starts.",
    ge=0,
    le=255,
)
FLUX_NEAR_DUPLICATE_BITS: Final[Variable[int]] = Variable(
    "FLUX_NEAR_DUPLICATE_BITS",
    int,
    4,
    "Two images whose phash differ in at most this many bits are near-duplicates; a change "
    "makes near_duplicates recompute every flag. Read when a build starts and by exports.",
    ge=0,
    le=16,
)
FLUX_MAX_FLAGGED_RATE: Final[Variable[float]] = Variable(
    "FLUX_MAX_FLAGGED_RATE",
    float,
    0.05,
    "Share of a partition's COMPLETED images that may be blank (images_pass_quality) or "
    "near-duplicates (near_duplicate_rate_below_threshold) before the check fails (WARN). Read "
    "when a build starts and when the checks run.",
    ge=0,
    le=1,
)
FLUX_RUN_LEASE: Final[Variable[float]] = Variable(
    "FLUX_RUN_LEASE",
    float,
    120.0,
    "Seconds a run's heartbeat stays fresh without renewal; past it flux_dead_runs fails the "
    "run. Read when the run starts.",
    gt=0,
    unit="seconds",
)
FLUX_RUN_MONITOR_INTERVAL: Final[Variable[int]] = Variable(
    "FLUX_RUN_MONITOR_INTERVAL",
    int,
    30,
    "Seconds between two ticks of the flux_dead_runs sensor, read when the code loads.",
    ge=1,
    unit="seconds",
)

#: Every variable declared above, in the order the configuration page lists them.
VARIABLES: Final[tuple[Variable[Any], ...]] = tuple(
    value for value in list(globals().values()) if isinstance(value, Variable)
)

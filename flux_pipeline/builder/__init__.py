"""The build: a range of partitions becoming images, one engine per run.

Owns planning (what each request key needs), routing claims, waiting on other runs, storing
outcomes, finishing each partition (its images, ``metadata.jsonl``, lineage) and the cost plan.
May import :mod:`flux_pipeline.store`, :mod:`flux_pipeline.segmind` and
:mod:`flux_pipeline.protocol`; never the dataset, report or command layers above it.
"""

from flux_pipeline.builder.range_build import (
    BuildProgress,
    BuildReport,
    RangeReport,
    build_partition,
    build_partitions,
)

__all__ = ["BuildProgress", "BuildReport", "RangeReport", "build_partition", "build_partitions"]

"""What a build reports: per partition (:class:`BuildReport`), per range
(:class:`RangeReport`) and while it runs (:class:`BuildProgress`). Plain values, re-exported by
:mod:`flux_pipeline.builder`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flux_pipeline.segmind import EngineStats

__all__ = ["BuildProgress", "BuildReport", "RangeReport"]


@dataclass(frozen=True)
class BuildProgress:
    """Where a build stands over all its partitions; ``rate`` is images generated (not reused)
    per second."""

    done: int
    total: int
    failed: int
    cached: int
    rate: float
    elapsed: float


@dataclass(frozen=True)
class BuildReport:
    """The outcome of one partition. ``completed``, ``failed`` and ``cached`` count its lineage
    rows; ``reused`` counts rows the plan found stored (no API call in this build);
    ``from_other_runs`` counts request keys sent for this partition whose outcome another run
    produced while this build ran (it held their claim, or finished them since the plan): taken
    from the ledger, not paid.

    In :func:`~flux_pipeline.builder.build_partition`, ``api_requests`` and ``engine`` are the
    engine's exact counts. In a range, ``api_requests`` sums the ``attempts`` of the results
    made for this partition (every HTTP request spent on each image: submit, polls, result,
    media download, retries), and ``engine`` is None: the shared engine's counters are
    :attr:`RangeReport.engine`.
    """

    partition: str
    total: int
    completed: int
    failed: int
    cached: int
    api_requests: int
    elapsed_s: float
    images_prefix_uri: str
    lineage_uri: str
    engine: EngineStats | None = None
    reused: int = 0
    from_other_runs: int = 0


@dataclass(frozen=True)
class RangeReport:
    """A range build: one report per partition (in the order given), the engine's counters
    over the whole range, its wall time, and the object-store requests it made, by verb."""

    partitions: tuple[BuildReport, ...]
    engine: EngineStats
    elapsed_s: float
    storage_requests: Mapping[str, int]

    @property
    def storage_requests_per_image(self) -> float | None:
        """Object-store requests per image this build generated (None: it generated none)."""
        made = self.engine.completed
        return sum(self.storage_requests.values()) / made if made else None

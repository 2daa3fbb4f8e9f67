"""What building some partitions will cost, read from storage alone (no API call, no write).

Each partition is classified by :func:`flux_pipeline.builder.planning.plan_partitions`, the same
classification the build acts on, so the plan and the build cannot disagree on what is paid:
``reusable`` images (one per prompt and variant) and ``failed`` cost nothing, ``in_flight``
jobs are already paid (those older than the service's retention, ``in_flight_expired``, will
likely be paid again), ``to_submit`` are billed, and a ``shared`` key is paid once, in the first
partition of the range that needs it.

The cost of one image (:func:`unit_cost`, USD) is the mean the account's record billed per
stored image where a reconciliation says (``reconciliation/``); else the mean ``cost`` the
service reported over the lineage's COMPLETED generations (``cached`` false, each request key
once); else ``price_per_image``; else unknown, and said so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import pandas as pd

from flux_pipeline.builder.planning import PartitionPlan, plan_partitions
from flux_pipeline.protocol import COMPLETED, GenerationRequest
from flux_pipeline.store.ledger import Ledger, LedgerEntry
from flux_pipeline.store.lineage import read_lineage
from flux_pipeline.store.reconciliation import billed_per_image
from flux_pipeline.store.storage import ObjectStore

Basis = Literal["billed", "reported", "price_per_image", "unknown"]
#: How long Segmind keeps a job's status and result after submission.
RESULT_RETENTION: Final = timedelta(hours=1)


@dataclass(frozen=True)
class UnitCost:
    """The expected cost of one new image (None: unknown), what it rests on, and how many
    generations reported a cost."""

    value: float | None
    basis: Basis
    samples: int

    def describe(self) -> str:
        """One line for people: the value and where it comes from."""
        if self.basis == "billed":
            return (
                f"{self.value:g} USD per image: the mean the account's record billed for "
                f"{self.samples} stored image(s) (flux-pipeline reconcile)"
            )
        if self.basis == "reported":
            return (
                f"{self.value:g} per image: the mean cost the service reported over "
                f"{self.samples} generated image(s) in the lineage"
            )
        if self.basis == "price_per_image":
            return f"{self.value:g} per image: --price-per-image (the lineage reports no cost)"
        return "unknown: the lineage reports no cost yet; pass --price-per-image to estimate"


@dataclass(frozen=True)
class PartitionCost:
    """One partition's plan (or the totals of a range, ``partition`` = ``"total"``).

    ``in_flight`` and ``to_submit`` count jobs; the other counts are images asked for (lineage
    rows: one per prompt and variant, so a row with ``variants`` 3 counts 3).
    """

    partition: str
    images: int
    reusable: int
    failed: int
    in_flight: int
    to_submit: int
    shared: int
    estimated_cost: float | None
    in_flight_expired: int = 0


@dataclass(frozen=True)
class CostPlan:
    """The plan of a range of partitions, in the order given, and the unit cost it used."""

    partitions: tuple[PartitionCost, ...]
    unit: UnitCost

    @property
    def total(self) -> PartitionCost:
        counts = {
            f.name: sum(getattr(p, f.name) for p in self.partitions)
            for f in fields(PartitionCost)
            if f.name not in ("partition", "estimated_cost")
        }
        return PartitionCost(
            partition="total", **counts, estimated_cost=_cost(counts["to_submit"], self.unit)
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: the unit cost, one object per partition and the totals."""
        return {
            "unit_cost": self.unit.value,
            "cost_basis": self.unit.basis,
            "cost_samples": self.unit.samples,
            "cost_basis_detail": self.unit.describe(),
            "partitions": [asdict(p) for p in self.partitions],
            "total": asdict(self.total),
        }


#: The lineage columns :func:`unit_cost` reads.
COST_INPUTS: Final = ("status", "cached", "request_key", "cost")


def unit_cost(
    lineage: pd.DataFrame,
    price_per_image: float | None = None,
    billed: Sequence[float] = (),
) -> UnitCost:
    """The expected cost of one image: the mean ``billed`` (USD the account's record billed
    per stored image, from the reconciliation files) where known, else from ``lineage`` (see
    the module), else ``price_per_image``."""
    if price_per_image is not None and not (
        math.isfinite(price_per_image) and price_per_image >= 0
    ):
        raise ValueError(f"price_per_image: must be a number >= 0, got {price_per_image}")
    if billed:
        return UnitCost(sum(billed) / len(billed), "billed", len(billed))
    generated = lineage[(lineage["status"] == COMPLETED) & ~lineage["cached"].astype(bool)]
    reported = generated.drop_duplicates("request_key")["cost"].dropna().astype(float)
    if len(reported):
        return UnitCost(float(reported.mean()), "reported", len(reported))
    if price_per_image is not None:
        return UnitCost(price_per_image, "price_per_image", 0)
    return UnitCost(None, "unknown", 0)


def plan_cost(
    store: ObjectStore,
    partitions: Mapping[str, Sequence[GenerationRequest]],
    *,
    backend: str,
    price_per_image: float | None = None,
) -> CostPlan:
    """Plan ``partitions`` (key -> its requests, in build order) against ``store``, for a build
    on ``backend`` (what other backends generated is to submit)."""
    billed = billed_per_image(store)
    unit = unit_cost(read_lineage(store, columns=COST_INPUTS), price_per_image, billed)
    plans = plan_partitions(Ledger(store, backend), partitions)
    expired_before = datetime.now(UTC) - RESULT_RETENTION
    return CostPlan(tuple(_partition_cost(plan, unit, expired_before) for plan in plans), unit)


def _partition_cost(plan: PartitionPlan, unit: UnitCost, expired_before: datetime) -> PartitionCost:
    to_submit = plan.new_images
    attach = plan.of("attach")
    return PartitionCost(
        partition=plan.partition,
        images=sum(len(key.prompts) for key in plan.keys),
        reusable=plan.prompts("reuse"),
        failed=plan.prompts("failed"),
        in_flight=len(attach),
        to_submit=to_submit,
        shared=plan.prompts("shared"),
        estimated_cost=_cost(to_submit, unit),
        in_flight_expired=sum(_expired(key.entry, expired_before) for key in attach),
    )


def _expired(entry: LedgerEntry | None, before: datetime) -> bool:
    submitted = entry.submitted_at if entry else None
    if submitted is None:
        return False
    return (submitted if submitted.tzinfo else submitted.replace(tzinfo=UTC)) < before


def _cost(images: int, unit: UnitCost) -> float | None:
    return None if unit.value is None else images * unit.value

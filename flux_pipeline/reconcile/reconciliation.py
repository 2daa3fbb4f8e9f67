"""The bill reconciled: the account's record of requests for the model, day by day (the
record's ``created_at`` day in UTC), against the ledgers and lineage under the root.

Each day is written to ``reconciliation/date=DAY/reconciliation.parquet`` (replaced whole), one
row per request (:class:`~flux_pipeline.reconcile.states.ReconciledRequest`). A day still
running, or just ended, is provisional: the record lags. The record is read through one paced
transport (the ``segmind`` pool's share of the quota, as a run), never once per image.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.reconcile.evidence import gather
from flux_pipeline.reconcile.recovery import recover, still_wanted
from flux_pipeline.reconcile.states import STATES, ReconciledRequest, classify, unbilled
from flux_pipeline.segmind import EngineConfig
from flux_pipeline.segmind.history import RecordedRequest, open_record
from flux_pipeline.store.ledger import Ledger
from flux_pipeline.store.reconciliation import (
    USD_DECIMALS,
    write_reconciliation,
)
from flux_pipeline.store.storage import ObjectStore


@dataclass
class Reconciliation:
    """What one reconciliation found, day by day, and what ``--recover`` stored."""

    first: date
    last: date
    days: dict[str, list[ReconciledRequest]] = field(default_factory=dict)
    #: Lookups in the account's record (each paced like any API request).
    record_requests: int = 0
    #: Request ids whose paid image ``--recover`` stored.
    recovered: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[ReconciledRequest]:
        return [row for rows in self.days.values() for row in rows]

    def summary(self) -> dict[str, Any]:
        """Images and USD per state, the total billed, and the requests no ledger knows."""
        rows = self.rows
        per_state = {
            state: {
                "images": sum(r.state == state for r in rows),
                "usd": _usd(r.billed_cost for r in rows if r.state == state),
            }
            for state in STATES
        }
        today = datetime.now(UTC).date()
        return {
            "from": self.first.isoformat(),
            "to": self.last.isoformat(),
            "states": per_state,
            "billed_usd": _usd(r.billed_cost for r in rows),
            "unknown_requests": sorted(r.request_id for r in rows if not r.known),
            "recovered": list(self.recovered),
            "record_requests": self.record_requests,
            "provisional_days": [
                d for d in self.days if date.fromisoformat(d) >= today - timedelta(days=1)
            ],
        }


def _usd(costs: Any) -> float:
    return round(float(sum(cost or 0.0 for cost in costs)), USD_DECIMALS)


def days_between(first: date, last: date) -> list[date]:
    if first > last:
        raise ValueError(f"--from {first} is after --to {last}")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def reconcile(
    store: ObjectStore,
    config: EngineConfig,
    backend: str,
    first: date,
    last: date,
    *,
    wanted: Callable[[str], Mapping[str, GenerationRequest]] | None = None,
) -> Reconciliation:
    """Reconcile days ``first``..``last`` and write their files; with ``wanted`` (a partition's
    requests by request key), also recover the paid images of still-wanted keys
    (``--recover``), then reconcile again so the files say what is kept."""
    days = days_between(first, last)
    result = _reconcile_days(store, config, backend, days)
    if wanted is not None:
        ledger = Ledger(store, backend)
        chosen = still_wanted(result.rows, gather(store, backend), wanted)
        if chosen:
            recovered = recover(store, ledger, config, chosen)
            again = _reconcile_days(store, config, backend, days)
            again.recovered = recovered
            again.record_requests += result.record_requests
            result = again
    return result


def _reconcile_days(
    store: ObjectStore, config: EngineConfig, backend: str, days: list[date]
) -> Reconciliation:
    evidence = gather(store, backend)
    # a day's edges: a request sent just before midnight may be recorded just after
    listed, requests = asyncio.run(
        _listed(config, days[0] - timedelta(days=1), days[-1] + timedelta(days=1))
    )
    result = Reconciliation(days[0], days[-1], record_requests=requests)
    ids = {row.request_id for row in listed}
    for day in days:
        rows = [classify(row, evidence) for row in listed if _day_of(row) == day]
        rows += unbilled(evidence, ids, day)
        result.days[day.isoformat()] = rows
        _write(store, day, rows)
    return result


async def _listed(
    config: EngineConfig, first: date, last: date
) -> tuple[list[RecordedRequest], int]:
    async with open_record(config) as record:
        rows = [row async for row in record.rows(first, last)]
        return rows, record.stats.requests["history"]


def _day_of(row: RecordedRequest) -> date | None:
    return None if row.created_at is None else row.created_at.astimezone(UTC).date()


def _write(store: ObjectStore, day: date, rows: list[ReconciledRequest]) -> None:
    columns = {f.name: [getattr(r, f.name) for r in rows] for f in fields(ReconciledRequest)}
    write_reconciliation(store, day.isoformat(), columns)

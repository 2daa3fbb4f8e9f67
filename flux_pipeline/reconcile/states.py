"""One row per request of the account's record, and per image we keep that it does not bill:
what was paid, and what became of it.

- ``stored``: paid, and its image kept (a lineage row, or a ledger entry whose partition is not
  finished yet);
- ``paid_not_stored``: paid (or running) and no image kept for it;
- ``stored_not_billed``: an image we keep that the record does not list (another backend, or
  the record lagging);
- ``failed``: the request failed, with its error and what it cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final, Literal

from flux_pipeline.protocol import (
    DEFAULT_ASPECT_RATIO,
    DEFAULT_SEED,
    DEFAULT_STEPS,
    request_key,
)
from flux_pipeline.reconcile.evidence import Evidence
from flux_pipeline.segmind.history import RecordedRequest

State = Literal["stored", "paid_not_stored", "stored_not_billed", "failed"]
STATES: Final[tuple[State, ...]] = ("stored", "paid_not_stored", "stored_not_billed", "failed")


@dataclass(frozen=True, slots=True)
class ReconciledRequest:
    """One row of ``reconciliation/date=DAY/reconciliation.parquet``."""

    request_id: str
    #: USD the record bills (null for ``stored_not_billed``).
    billed_cost: float | None
    request_key: str | None
    partition: str | None
    image_uri: str | None
    state: State
    #: The record's ``model_status`` (COMPLETED, FAILED, PENDING); null when not in it.
    record_status: str | None
    #: The record's ``created_at`` (UTC), else our ``submitted_at``.
    created_at: datetime | None
    error: str | None
    #: A ledger or lineage of this root names the request (False: another run or tool).
    known: bool


def key_of(row: RecordedRequest) -> str | None:
    """The request key of a recorded request, from its inputs (defaults filled in)."""
    body = row.request_body
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not row.model_name:
        return None
    try:
        return request_key(
            row.model_name,
            prompt,
            int(body.get("seed", DEFAULT_SEED)),
            int(body.get("steps", DEFAULT_STEPS)),
            str(body.get("aspect_ratio", DEFAULT_ASPECT_RATIO)),
        )
    except (TypeError, ValueError):
        return None


def classify(row: RecordedRequest, evidence: Evidence) -> ReconciledRequest:
    """The state of one recorded request against what we keep."""
    request_id = row.request_id
    stored = evidence.stored.get(request_id)
    key = stored.request_key if stored else evidence.known.get(request_id) or key_of(row)
    partition = stored.partition if stored else evidence.partitions.get(request_id)
    state: State
    if row.failed:
        state = "failed"
    elif stored is not None:
        state = "stored"
    else:
        state = "paid_not_stored"
    return ReconciledRequest(
        request_id=request_id,
        billed_cost=row.cost,
        request_key=key,
        partition=partition,
        image_uri=stored.image_uri if stored and state == "stored" else None,
        state=state,
        record_status=row.status,
        created_at=row.created_at,
        error=row.error,
        known=request_id in evidence.known,
    )


def unbilled(evidence: Evidence, listed: set[str], day: date) -> list[ReconciledRequest]:
    """Images we keep, sent on ``day`` (our clock, UTC), that the record does not list."""
    return [
        ReconciledRequest(
            request_id=request_id,
            billed_cost=None,
            request_key=image.request_key,
            partition=image.partition,
            image_uri=image.image_uri,
            state="stored_not_billed",
            record_status=None,
            created_at=image.submitted_at,
            error=None,
            known=True,
        )
        for request_id, image in sorted(evidence.stored.items())
        if request_id not in listed
        and image.submitted_at is not None
        and image.submitted_at.astimezone(UTC).date() == day
    ]

"""The account's record of requests, as Segmind's SDK 1.3 reads it (``generations.history`` and
``generations.get``): every accepted submit (v2 and v1) with its inputs as sent, its outcome and
what it cost, kept for the process's life or ``history_retention`` seconds.

The record holds no image bytes: a completed request's ``generation_url`` is served by
re-rendering it from the recorded parameters (see ``app.py``), so it stays downloadable after the
job's result has expired.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flux_pipeline import protocol
from flux_pipeline.emulator.params import Params

#: The SDK's documented limits: at most 100 rows a page, a window of at most 31 days.
MAX_PER_PAGE = 100
MAX_WINDOW_DAYS = 31
#: The SDK's defaults: 20 rows a page, the last 7 days.
DEFAULT_PER_PAGE = 20
DEFAULT_WINDOW_DAYS = 7
STATUSES = (protocol.COMPLETED, protocol.FAILED, "PENDING")


class BadQuery(ValueError):
    """A 400: the message names the query parameter."""


@dataclass(eq=False)
class RecordRow:
    """One accepted request of an account; ``account`` is a digest of the key, never the key."""

    request_id: str
    account: str
    params: Params
    request_body: dict[str, Any]
    created_at: datetime
    created_monotonic: float
    #: Where the image is served once the job has completed.
    media_url: str
    status: str = "PENDING"
    updated_at: datetime | None = None
    credits_deduction: float = 0.0
    latency_ms: int | None = None
    error: str | None = None

    def finish(self, status: str, *, cost: float, error: str | None) -> None:
        """The job ended: its outcome and what it cost."""
        now = datetime.now(UTC)
        self.status = protocol.COMPLETED if status == protocol.COMPLETED else protocol.FAILED
        self.updated_at = now
        self.credits_deduction = cost
        self.error = error
        self.latency_ms = round((now - self.created_at).total_seconds() * 1000)

    def as_json(self) -> dict[str, Any]:
        """The row as the record serves it (the SDK's field names)."""
        return {
            "request_id": self.request_id,
            "model_name": protocol.MODEL,
            "model_status": self.status,
            "credits_deduction": self.credits_deduction,
            "request_body": self.request_body,
            "generation_url": self.media_url if self.status == protocol.COMPLETED else None,
            "latency_ms": self.latency_ms,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at or self.created_at),
            "error": self.error,
        }


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class HistoryQuery:
    """The query of ``GET /inference-request/request-history``, checked (:class:`BadQuery`)."""

    page: int
    per_page: int
    first_day: date
    last_day: date
    model_name: str | None
    status: str | None
    ascending: bool

    @classmethod
    def parse(cls, query: dict[str, str], today: date) -> HistoryQuery:
        page = _whole("page", query.get("page", "1"), low=1)
        per_page = _whole("per_page", query.get("per_page", str(DEFAULT_PER_PAGE)), low=1)
        if per_page > MAX_PER_PAGE:
            raise BadQuery(f"per_page: must be from 1 to {MAX_PER_PAGE}, got {per_page}")
        last = _day("to_date", query.get("to_date")) or today
        first = _day("from_date", query.get("from_date")) or last - timedelta(
            days=DEFAULT_WINDOW_DAYS
        )
        if first > last:
            raise BadQuery(f"from_date: {first} is after to_date {last}")
        if (last - first).days + 1 > MAX_WINDOW_DAYS:
            raise BadQuery(
                f"from_date/to_date: the window may span at most {MAX_WINDOW_DAYS} days, "
                f"got {first} to {last}"
            )
        status = query.get("status") or None
        if status is not None and status not in STATUSES:
            raise BadQuery(f"status: must be one of {', '.join(STATUSES)}, got {status!r}")
        order = query.get("sort_order", "desc")
        if order not in ("asc", "desc"):
            raise BadQuery(f"sort_order: must be asc or desc, got {order!r}")
        return cls(
            page=page,
            per_page=per_page,
            first_day=first,
            last_day=last,
            model_name=query.get("model_name") or None,
            status=status,
            ascending=order == "asc",
        )

    def admits(self, row: RecordRow) -> bool:
        day = row.created_at.date()
        return (
            self.first_day <= day <= self.last_day
            and (self.model_name is None or self.model_name in protocol.MODEL)
            and (self.status is None or row.status == self.status)
        )


def _whole(name: str, value: str, *, low: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise BadQuery(f"{name}: must be a whole number, got {value!r}") from None
    if number < low:
        raise BadQuery(f"{name}: must be >= {low}, got {number}")
    return number


def _day(name: str, value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadQuery(f"{name}: must be a day YYYY-MM-DD, got {value!r}") from None


class AccountRecord:
    """Every accepted request by account, oldest first, forgotten after ``retention`` seconds
    (``None``: kept for the process's life)."""

    def __init__(self, retention: float | None) -> None:
        self.retention = retention
        self._rows: dict[str, RecordRow] = {}

    def add(
        self,
        request_id: str,
        account: str,
        params: Params,
        body: dict[str, Any],
        media_url: str,
    ) -> RecordRow:
        """Record an accepted request (PENDING until :meth:`RecordRow.finish`)."""
        row = RecordRow(
            request_id=request_id,
            account=account,
            params=params,
            request_body=body,
            created_at=datetime.now(UTC),
            created_monotonic=time.monotonic(),
            media_url=media_url,
        )
        self._rows[request_id] = row
        return row

    def get(self, account: str, request_id: str) -> RecordRow | None:
        """The account's own request of any age (within retention), else None."""
        self.sweep()
        row = self._rows.get(request_id)
        return row if row is not None and row.account == account else None

    def find(self, request_id: str) -> RecordRow | None:
        """The request whoever made it (the media host serves anyone, like a CDN)."""
        self.sweep()
        return self._rows.get(request_id)

    def page(self, account: str, query: HistoryQuery) -> dict[str, Any]:
        """One page of the account's requests, newest first unless ``sort_order=asc``."""
        self.sweep()
        rows = [row for row in self._rows.values() if row.account == account and query.admits(row)]
        if not query.ascending:
            rows.reverse()
        start = (query.page - 1) * query.per_page
        return {
            "data": [row.as_json() for row in rows[start : start + query.per_page]],
            "page": query.page,
            "per_page": query.per_page,
            "total": len(rows),
            "total_pages": math.ceil(len(rows) / query.per_page),
        }

    def sweep(self) -> None:
        if self.retention is None:
            return
        oldest = time.monotonic() - self.retention
        for request_id in [
            key for key, row in self._rows.items() if row.created_monotonic < oldest
        ]:
            del self._rows[request_id]

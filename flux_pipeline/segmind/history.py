"""The account's record of requests (what Segmind's SDK 1.3 reads with ``generations.history``
and ``generations.get``): how it is found, asked and read.

- Root: ``https://api.spotprod.segmind.com`` when the API host is Segmind's (under
  ``segmind.com``), else the API root itself (an emulator, a proxy). The key goes there as to
  the API: the same registrable domain (``transport.may_receive_key``).
- Limits the SDK documents: ``per_page`` at most 100; ``from_date``/``to_date`` are days and a
  window spans at most 31 of them (longer ones are split); ``model_name`` matches by substring
  (rows are filtered exactly here); a request may be listed once per output (rows are
  de-duplicated on ``request_id``).
- The shape is undocumented: a page is a bare list, or the list under ``data``, ``items``,
  ``results`` or ``requests``; one row is bare or under ``data``.

Every lookup goes through the engine's transport: paced under the account's quota and retried
like any API request (``stats.requests["history"]``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

from flux_pipeline.protocol import COMPLETED, FAILED, GenerationRequest
from flux_pipeline.segmind.config import EngineConfig
from flux_pipeline.segmind.http.client import HttpClient
from flux_pipeline.segmind.http.exceptions import StepFailed
from flux_pipeline.segmind.http.key_scope import api_base
from flux_pipeline.segmind.http.timeouts import Attempts
from flux_pipeline.segmind.pacing import AdaptiveWindow, RequestPacer
from flux_pipeline.segmind.stats import EngineStats

#: Where Segmind serves the record (the SDK's ``REQUEST_HISTORY_URL`` without its path).
SEGMIND_HISTORY_ROOT: Final = "https://api.spotprod.segmind.com"
HISTORY_PATH: Final = "/inference-request/request-history"
MAX_PER_PAGE: Final = 100
MAX_WINDOW_DAYS: Final = 31
#: How far the service's clock may be from ours when matching a send time to ``created_at``.
CLOCK_SKEW: Final = timedelta(minutes=5)
_LIST_KEYS: Final = ("data", "items", "results", "requests")
#: Seconds one lookup (all its retries) may take.
_LOOKUP_DEADLINE: Final = 120.0


def history_root(base_url: str) -> str:
    """The record's root for the API at ``base_url`` (see the module)."""
    base = api_base(base_url)
    host = (urlsplit(base).hostname or "").lower().rstrip(".")
    if host == "segmind.com" or host.endswith(".segmind.com"):
        return SEGMIND_HISTORY_ROOT
    return base


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One row of the account's record, as far as this project reads it."""

    request_id: str
    model_name: str
    status: str
    cost: float | None
    request_body: dict[str, Any]
    generation_url: str | None
    created_at: datetime | None
    error: str | None

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> RecordedRequest:
        body = row.get("request_body")
        cost = row.get("credits_deduction")
        return cls(
            request_id=str(row.get("request_id") or ""),
            model_name=str(row.get("model_name") or ""),
            status=str(row.get("model_status") or row.get("status") or "PENDING").upper(),
            cost=float(cost) if isinstance(cost, int | float) else None,
            request_body=body if isinstance(body, dict) else {},
            generation_url=str(row["generation_url"]) if row.get("generation_url") else None,
            created_at=_moment(row.get("created_at")),
            error=str(row["error"]) if row.get("error") else None,
        )

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    def asks_for(self, request: GenerationRequest) -> bool:
        """Whether this row is ``request`` as sent: same model, prompt, seed, steps, ratio."""
        body = self.request_body
        return (
            self.model_name == request.model
            and body.get("prompt") == request.prompt
            and body.get("seed") == request.seed
            and body.get("steps") == request.steps
            and body.get("aspect_ratio") == request.aspect_ratio
        )


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def rows_of(body: Any) -> list[dict[str, Any]]:
    """The rows of a page in any of the shapes it may come in (see the module)."""
    if isinstance(body, dict):
        for key in _LIST_KEYS:
            if isinstance(body.get(key), list):
                body = body[key]
                break
            if isinstance(body.get(key), dict) and key == "data":
                return rows_of(body[key])
    if not isinstance(body, list):
        return []
    return [row for row in body if isinstance(row, dict) and row.get("request_id")]


def row_of(body: Any) -> dict[str, Any] | None:
    """One row, bare or under ``data``; None when the body holds none."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        body = body["data"]
    if isinstance(body, dict) and body.get("request_id"):
        return body
    return None


def windows(first: date, last: date) -> Iterator[tuple[date, date]]:
    """``first``..``last`` (days, both included) as windows of at most 31 days, newest first."""
    end = last
    while end >= first:
        start = max(first, end - timedelta(days=MAX_WINDOW_DAYS - 1))
        yield start, end
        end = start - timedelta(days=1)


class AccountRecord:
    """Reads the account's record for one model through the engine's transport."""

    def __init__(self, http: HttpClient, config: EngineConfig) -> None:
        self.http = http
        self.stats = http.stats
        self.model = config.model
        self.root = history_root(config.base_url)
        if not http.trust(self.root):
            raise ValueError(f"the record's root {self.root} may not receive the API key")

    async def get(self, request_id: str) -> RecordedRequest | None:
        """The account's request ``request_id``, of any age; None when the record has none
        (unknown, not this account's own, or not recorded yet)."""
        url = f"{self.root}{HISTORY_PATH}/{quote(request_id, safe='')}"
        response = await self.http.send("history", "GET", url, _attempts())
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise StepFailed(
                f"record: HTTP {response.status_code} for request {request_id}: "
                f"{self.http.error_text(response)}",
                retryable=True,
            )
        row = row_of(_json(response))
        return None if row is None else RecordedRequest.from_json(row)

    async def rows(
        self, first: date, last: date, *, status: str | None = None
    ) -> AsyncIterator[RecordedRequest]:
        """The model's requests created on days ``first``..``last`` (UTC), each once, newest
        window first."""
        seen: set[str] = set()
        for start, end in windows(first, last):
            async for row in self._window(start, end, status):
                if row.model_name == self.model and row.request_id not in seen:
                    seen.add(row.request_id)
                    yield row

    async def _window(
        self, first: date, last: date, status: str | None
    ) -> AsyncIterator[RecordedRequest]:
        page = 1
        while True:
            query: dict[str, Any] = {
                "page": page,
                "per_page": MAX_PER_PAGE,
                "from_date": first.isoformat(),
                "to_date": last.isoformat(),
                "model_name": self.model,
            }
            if status is not None:
                query["status"] = status
            url = f"{self.root}{HISTORY_PATH}?{urlencode(query)}"
            response = await self.http.send("history", "GET", url, _attempts())
            if response.status_code != 200:
                raise StepFailed(
                    f"record: HTTP {response.status_code} listing {first}..{last}: "
                    f"{self.http.error_text(response)}",
                    retryable=True,
                )
            body = _json(response)
            rows = rows_of(body)
            for row in rows:
                yield RecordedRequest.from_json(row)
            pages = body.get("total_pages") if isinstance(body, dict) else None
            if len(rows) < MAX_PER_PAGE or (isinstance(pages, int) and page >= pages):
                return
            page += 1

    async def find(
        self,
        request: GenerationRequest,
        sent_at: datetime,
        *,
        exclude: frozenset[str] = frozenset(),
    ) -> RecordedRequest | None:
        """The request made of ``request``'s body sent at ``sent_at`` (our clock): a row with
        the same inputs created between ``sent_at`` and now, give or take :data:`CLOCK_SKEW`,
        other than the ids in ``exclude``; the earliest such row."""
        earliest = sent_at - CLOCK_SKEW
        latest = datetime.now(UTC) + CLOCK_SKEW
        found: RecordedRequest | None = None
        async for row in self.rows(earliest.date(), latest.date()):
            created = row.created_at
            if created is not None and created < earliest:
                break  # rows come newest first: the rest are older still
            if created is None or created > latest:
                continue
            if row.request_id in exclude or not row.asks_for(request):
                continue
            if found is None or (found.created_at or created) > created:
                found = row
        return found


@asynccontextmanager
async def open_record(config: EngineConfig) -> AsyncIterator[AccountRecord]:
    """The account's record outside an engine (reconciliation): its own transport, paced at
    ``requests_per_minute`` like a run; ``record.http`` counts its lookups."""
    stats = EngineStats()
    http = HttpClient(
        config,
        stats,
        AdaptiveWindow(config.max_concurrency),
        RequestPacer(config.requests_per_minute, stats),
    )
    try:
        yield AccountRecord(http, config)
    finally:
        await http.aclose()


class Adopted(Exception):
    """A submit whose fate was unknown was found in the account's record: the job exists, its
    request id is ``row.request_id``; it is followed instead of sent again."""

    def __init__(self, row: RecordedRequest) -> None:
        super().__init__(f"found in the account's record as request {row.request_id}")
        self.row = row


def _attempts() -> Attempts:
    return Attempts(time.monotonic() + _LOOKUP_DEADLINE)


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None

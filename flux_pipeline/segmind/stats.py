"""Counters of one engine's traffic, handed back explicitly (not patched in)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

RequestKind = Literal["submit", "status", "result", "download", "sync"]
REQUEST_KINDS: tuple[RequestKind, ...] = ("submit", "status", "result", "download", "sync")


@dataclass
class EngineStats:
    """What the engine spent and saw. ``requests`` counts every HTTP request sent."""

    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REQUEST_KINDS, 0))
    #: Requests sent again after a transient failure (transport error, 429, 500, 502, 504).
    retries: int = 0
    rate_limited: int = 0
    transport_errors: int = 0
    server_errors: int = 0
    #: Submits accepted (billed jobs), jobs attached to instead, attached ids found expired.
    submitted: int = 0
    attached: int = 0
    expired: int = 0
    #: Submits whose answer never arrived (maybe billed), left un-reposted unless allowed.
    ambiguous_submits: int = 0
    completed: int = 0
    failed: int = 0
    cost: float = 0.0
    remaining_credits: float | None = None

    @property
    def api_requests(self) -> int:
        """Requests to the API itself (output downloads from the media host excluded)."""
        return sum(n for kind, n in self.requests.items() if kind != "download")

    def as_dict(self) -> dict[str, Any]:
        """Flat, JSON-friendly view (e.g. for Dagster metadata)."""
        flat = {k: v for k, v in asdict(self).items() if k != "requests"}
        flat.update({f"requests_{kind}": n for kind, n in self.requests.items()})
        flat["api_requests"] = self.api_requests
        return flat

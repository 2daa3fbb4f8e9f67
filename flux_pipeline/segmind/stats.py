"""Counters of one engine's traffic, handed back explicitly (not patched in)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: ``history``: a lookup in the account's record (``segmind/history.py``).
RequestKind = Literal["submit", "status", "result", "download", "sync", "history"]
REQUEST_KINDS: tuple[RequestKind, ...] = (
    "submit",
    "status",
    "result",
    "download",
    "sync",
    "history",
)
#: The two APIs an image can go through: v2 submit/poll/result, or one v1 POST.
ApiMode = Literal["async", "sync"]
API_MODES: tuple[ApiMode, ...] = ("async", "sync")


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
    #: Submits whose answer never arrived or was a 500/502/504 (the job may exist); of them,
    #: those found in the account's record and adopted, and those found absent and sent again.
    ambiguous_submits: int = 0
    adopted: int = 0
    resubmitted: int = 0
    #: Expired request ids (404) whose outcome the account's record gave instead.
    recovered: int = 0
    completed: int = 0
    failed: int = 0
    cost: float = 0.0
    remaining_credits: float | None = None
    #: API requests that went through the pacer (media downloads never do), and those of
    #: them that had to wait for the pace (``requests_per_minute`` or learned) or a 429's hold.
    paced: int = 0
    pace_waits: int = 0
    #: The shortest time the pacer left between the send slots of two requests it let through
    #: at a pace: with ``requests_per_minute`` set, never under 60 s / that, so no window of
    #: the quota admits more than it allows. None until two requests were paced.
    pace_gap: float | None = None
    #: Requests not submitted because the budget (max_new_images / max_cost) was spent.
    budget_refused: int = 0
    #: What the budget guard counted (with or without a budget): accepted submits, including
    #: maybe-billed ones (an answer lost, a 200 without request_id, a submit cancelled while
    #: sent); their cost (reported, else estimated at the mean reported or ``price_per_image``);
    #: the first refusal's reason, naming the limit (``budget max_new_images=5 reached``).
    budget_spent_images: int = 0
    budget_spent_cost: float = 0.0
    budget_reason: str | None = None
    #: The configured mode, the images completed through each protocol, and how often
    #: ``auto`` changed the protocol of new images.
    mode: str = "async"
    completed_by_mode: dict[str, int] = field(default_factory=lambda: dict.fromkeys(API_MODES, 0))
    mode_switches: int = 0
    #: The v1 endpoint answered 404/405 (no sync endpoint): v2 for the rest of the run.
    sync_unavailable: bool = False
    #: Answers whose body passed its cap (reading stopped there), image bodies that did not
    #: decode fully (each one asked again while the service kept the result), and images of
    #: a size far from the one their aspect ratio asks for (kept; see ``segmind/media.py``).
    oversized_answers: int = 0
    bad_media: int = 0
    unexpected_sizes: int = 0

    @property
    def mode_used(self) -> str:
        """The protocol(s) the completed images went through: async, sync, async+sync, none."""
        used = [name for name in API_MODES if self.completed_by_mode.get(name)]
        return "+".join(used) or "none"

    @property
    def api_requests(self) -> int:
        """Requests to the API itself (output downloads from the media host excluded)."""
        return sum(n for kind, n in self.requests.items() if kind != "download")

    @property
    def requests_per_image(self) -> float | None:
        """API requests per completed image (what a quota counting every request pays)."""
        return self.api_requests / self.completed if self.completed else None

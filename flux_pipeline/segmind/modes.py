"""Which protocol the next image goes through: the configured one, or ``auto``'s choice.

Under a quota that binds, images per minute = quota / API requests per image: one v1 POST
per image against at least two for v2 (submit, result), so v1 makes up to twice the images.
v2 is better otherwise: its request id is recorded before polling (a restarted run attaches
to it) and no connection is held open for the whole inference. ``auto`` starts with v2 and
reviews, every few requests, what the pacer saw: while the pace binds (requests go out at its
rate), new images go through v1 (v2 always costs at least two requests per image); back to
v2 once v2's cost at the current image rate would fit well within the pace. The pace is
``requests_per_minute``, or one learned from 429s once they came back after a hold (two
bursts: a quota); 429s alone never switch, so a burst of them (a gateway's hiccup) leaves v2
in place. A v1 endpoint that answers 404/405 does not exist: v2 for the rest of the run.
A new image's protocol is picked when its first request may go out (after the pacer), so
images queued behind a binding pace do not commit to v2 before the review could see it bind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flux_pipeline.segmind.config import Mode
from flux_pipeline.segmind.pacing import RequestPacer
from flux_pipeline.segmind.stats import ApiMode, EngineStats

#: Requests sent, and seconds, between two reviews (and before going back to v2).
_REVIEW_REQUESTS = 8
_REVIEW_SECONDS = 0.5
_BACK_SECONDS = 2.0
#: The pace binds when requests went out at this share of it (or more).
_BINDING = 0.85
#: Back to v2 only when its requests would take at most this share of the pace.
_FITS = 0.7
#: v2's requests per image before any v2 image has completed: submit + result.
_V2_LEAST = 2.0
#: Bursts of 429s after which a pace learned from them stands for a quota.
_QUOTA_BURSTS = 2


@dataclass(frozen=True)
class _Mark:
    at: float
    sent: int
    completed_sync: int


class ModeChooser:
    """Picks ``async`` or ``sync`` for each new image (see the module)."""

    def __init__(self, mode: Mode, pacer: RequestPacer, stats: EngineStats) -> None:
        self.auto = mode == "auto"
        self.current: ApiMode = "sync" if mode == "sync" else "async"
        self._pacer = pacer
        self._stats = stats
        self._mark = self._now()

    def pick(self) -> ApiMode:
        """The protocol of the next image."""
        if self.auto:
            self._review()
        return self.current

    def sync_unavailable(self) -> None:
        """The service has no v1 endpoint: v2 from now on, whatever the mode."""
        self.auto = False
        if self.current == "sync":
            self._switch("async")

    def _now(self) -> _Mark:
        return _Mark(
            at=time.monotonic(),
            sent=self._pacer.sent,
            completed_sync=self._stats.completed_by_mode["sync"],
        )

    def v2_requests_per_image(self) -> float:
        """API requests per image v2 has cost so far (its least, 2, before any image)."""
        done = self._stats.completed_by_mode["async"]
        if done < 5:
            return _V2_LEAST
        requests = self._stats.requests
        return max(_V2_LEAST, (requests["submit"] + requests["status"] + requests["result"]) / done)

    def _review(self) -> None:
        now, mark = self._now(), self._mark
        sent, elapsed = now.sent - mark.sent, now.at - mark.at
        least = _REVIEW_SECONDS if self.current == "async" else _BACK_SECONDS
        if sent < _REVIEW_REQUESTS or elapsed < least:
            return
        self._mark = now
        pacer = self._pacer
        rate = pacer.rate if pacer.bursts >= _QUOTA_BURSTS else pacer.quota
        binding = rate is not None and sent >= _BINDING * rate * elapsed
        if self.current == "async":
            if binding:
                self._switch("sync")
            return
        image_rate = (now.completed_sync - mark.completed_sync) / elapsed
        if not binding and (
            rate is None or image_rate * self.v2_requests_per_image() <= _FITS * rate
        ):
            self._switch("async")

    def _switch(self, mode: ApiMode) -> None:
        self.current = mode
        self._stats.mode_switches += 1

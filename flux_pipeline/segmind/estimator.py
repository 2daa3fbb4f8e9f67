"""When to poll: learn how long jobs take, the service's queue included.

A job's time from submit to done is its inference time plus its wait in the service's
queue, and that wait grows with the number of jobs in flight. By Little's law, while the
service is saturated, a job with ``ahead`` of our jobs submitted before it (and unfinished)
is done about ``ahead + 1`` completions later: ``(ahead + 1) x per_job`` seconds, where
``per_job`` is learned from the service's own figures (``queue_time + inference_time``
divided by ``ahead + 1``) of the jobs that waited in the queue. Service-side figures, not
our own polls, so polling late never teaches us to poll later still.

A service whose bodies carry no ``metrics`` reports neither figure; then ``per_job`` is
learned from what the client itself sees. It starts as the spacing of our first completions
(the queue's pace for our jobs, Little's law again), then follows the first polls: a little
shorter after each that finds its job done, longer after each that finds it running, so it
settles where about two first polls in three find the job done (a miss costs one poll
more, a late poll costs throughput). The spacing alone would ratchet: a late poll frees
its window slot late, the next submit goes out late, completions spread out, and polls
would go later still; a poll that finds its job done always pulls the next ones earlier.
"""

from __future__ import annotations

import time
from bisect import bisect_left

#: A job waited for a slot when its queue time exceeds this share of its inference time.
_QUEUED = 0.1
#: First polls go out this much after the expected completion (jitter, completion order).
_MARGIN = 0.08
#: Bounds of the wait between two polls of the same job, seconds.
_SHORTEST, _LONGEST = 0.02, 30.0
#: Our first completions whose spacing gives the first client-side ``per_job``.
_FIRST_COMPLETIONS = 16
#: ``per_job`` after a first poll that found the job done / still running: settles where
#: log(_UP) / (log(_UP) - log(_DOWN)) = 66 % of first polls find their job done.
_DOWN, _UP = 0.985, 1.03


class _Ewma:
    """Exponentially weighted mean and mean deviation (as TCP estimates round trips)."""

    def __init__(self, prior: float, *, weight: float = 0.2) -> None:
        self.mean = prior
        self.deviation = prior / 4
        self.seen = False
        self._weight = weight

    def add(self, value: float) -> None:
        if not self.seen:
            self.mean, self.deviation, self.seen = value, value / 8, True
            return
        self.deviation += self._weight * (abs(value - self.mean) - self.deviation)
        self.mean += self._weight * (value - self.mean)


class CompletionEstimator:
    """Expected seconds from an accepted submit to a finished job (see the module)."""

    def __init__(self, prior_step_time: float) -> None:
        self._step = _Ewma(prior_step_time)
        self._per_job = _Ewma(0.0)
        self._done_at: list[float] = []
        #: ``per_job`` as the client sees it (see the module); None until first measured.
        self._observed: float | None = None

    def completed(self, at: float | None = None) -> None:
        """One of our v2 jobs was seen done (``time.monotonic()`` by default)."""
        if self._observed is not None:
            return
        self._done_at.append(time.monotonic() if at is None else at)
        done = self._done_at
        if len(done) >= _FIRST_COMPLETIONS and done[-1] > done[0]:
            self._observed = (done[-1] - done[0]) / (len(done) - 1)

    def first_poll_seen(self, *, done: bool) -> None:
        """A first poll (planned by :meth:`first_poll`) found its job done, or not yet."""
        if self._observed is not None:
            self._observed *= _DOWN if done else _UP

    def _queue_pace(self) -> tuple[float, float] | None:
        """Seconds per job through the queue and their deviation: the service's own figures,
        else the client's (see the module); None while neither says anything."""
        if self._per_job.seen:
            return self._per_job.mean, self._per_job.deviation
        if self._observed is None:
            return None
        return self._observed, 0.0

    def observe(
        self,
        steps: int,
        *,
        inference_time: float | None,
        queue_time: float | None,
        ahead: int | None,
    ) -> None:
        """Learn from a finished job's metrics; ``ahead`` as counted when it was submitted."""
        if inference_time is None or inference_time <= 0:
            return
        self._step.add(inference_time / max(1, steps))
        if queue_time is None or queue_time < 0 or ahead is None:
            return
        sample = (queue_time + inference_time) / (ahead + 1)
        # A job that waited says how fast the queue moves; one that did not can only say it
        # moves faster than we thought.
        if queue_time > _QUEUED * inference_time or (
            self._per_job.seen and sample < self._per_job.mean
        ):
            self._per_job.add(sample)

    def service_time(self, steps: int) -> float:
        """Mean inference time of a job of ``steps`` steps."""
        return steps * self._step.mean

    def expected(self, steps: int, ahead: int) -> float:
        """Seconds from now until a job with ``ahead`` jobs before it is done, at the mean."""
        service = self.service_time(steps)
        pace = self._queue_pace()
        if pace is None:
            return service
        return max(service, (ahead + 1) * pace[0])

    def first_poll(self, steps: int, ahead: int) -> float:
        """Seconds to wait after the submit before the first poll."""
        spread = steps * self._step.deviation
        pace = self._queue_pace()
        if pace is not None:
            spread += (ahead + 1) * pace[1] / 2
        return self.expected(steps, ahead) * (1 + _MARGIN) + spread

    def next_poll(self, steps: int, misses: int, *, queued: bool, ahead: int | None) -> float:
        """Seconds to wait after the ``misses``-th poll that found the job unfinished.

        ``ahead``: our unfinished jobs submitted before this one (None when unknown, as for
        a job attached from an earlier run). The floor grows with each miss, so a job the
        estimate keeps getting wrong costs a few polls, not many.
        """
        service = self.service_time(steps)
        pace = self._queue_pace()
        if pace is not None and ahead is not None:
            estimate = (ahead + 1) * pace[0]
            estimate = max(estimate, service) if queued else min(estimate, service)
        else:
            estimate = service if queued else 0.25 * service
        floor = 0.05 * service * 1.5 ** (misses - 1)
        return min(_LONGEST, max(_SHORTEST, estimate, floor))


class SubmitOrder:
    """Our unfinished v2 jobs in the order they were accepted: how many are ahead of one."""

    def __init__(self) -> None:
        self._places: list[int] = []
        self._next = 0

    def add(self) -> int:
        """The place of a job accepted now (after every job accepted before it)."""
        place, self._next = self._next, self._next + 1
        self._places.append(place)
        return place

    def ahead(self, place: int) -> int:
        """Unfinished jobs accepted before the one at ``place``."""
        return bisect_left(self._places, place)

    def remove(self, place: int) -> None:
        index = bisect_left(self._places, place)
        if index < len(self._places) and self._places[index] == place:
            del self._places[index]

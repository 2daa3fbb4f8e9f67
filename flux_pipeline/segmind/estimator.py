"""When to poll: learn how long jobs take from the times the service reports."""

from __future__ import annotations


class _Ewma:
    """Exponentially weighted mean and mean deviation (as TCP estimates round trips)."""

    def __init__(self, prior: float, *, weight: float = 0.2) -> None:
        self.mean = prior
        self.deviation = prior / 4
        self._weight = weight
        self._seen = False

    def add(self, value: float) -> None:
        if not self._seen:
            self.mean, self.deviation, self._seen = value, value / 8, True
            return
        self.deviation += self._weight * (abs(value - self.mean) - self.deviation)
        self.mean += self._weight * (value - self.mean)


class CompletionEstimator:
    """Expected seconds from an accepted submit to a finished job, per number of steps.

    Learns ``inference_time / steps`` and ``queue_time`` from each finished job's
    metrics; the first poll goes out a little after the mean (one deviation later),
    so that most first polls already find the image ready.
    """

    def __init__(self, prior_step_time: float) -> None:
        self._step = _Ewma(prior_step_time)
        self._queue = _Ewma(0.0)

    def observe(self, steps: int, inference_time: float | None, queue_time: float | None) -> None:
        if inference_time is not None and inference_time > 0:
            self._step.add(inference_time / max(1, steps))
        if queue_time is not None and queue_time >= 0:
            self._queue.add(queue_time)

    def service_time(self, steps: int) -> float:
        """Mean inference time of a job of ``steps`` steps."""
        return steps * self._step.mean

    def first_poll(self, steps: int) -> float:
        """Seconds to wait after the submit before the first poll."""
        step = self._step.mean + self._step.deviation
        queue = self._queue.mean + self._queue.deviation
        return queue + steps * step

    def next_poll(self, steps: int, misses: int, *, queued: bool) -> float:
        """Seconds to wait after the ``misses``-th poll that found the job unfinished."""
        if queued:
            return max(0.02, self.service_time(steps))
        base = max(0.02, 0.1 * self.service_time(steps))
        return min(5.0, base * 1.5 ** (misses - 1))

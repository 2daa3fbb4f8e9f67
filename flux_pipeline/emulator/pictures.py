"""What picture a job gets: its own, an all-black one (``--blank-rate``), or the picture of an
earlier job re-encoded (``--duplicate-rate``), as a service's safety filter or cache might.

Which jobs get a blank or a duplicate is drawn from the seed and the job's request key, so the
same request always gets the same kind of answer. A duplicate repeats the picture of a job of
the same aspect ratio finished before it (chosen by the same draw among the last
:data:`REMEMBERED`): other bytes, nearly the same pixels. Without such a job the picture is the
job's own.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Final

from flux_pipeline.emulator.limits import draw
from flux_pipeline.emulator.params import Params
from flux_pipeline.emulator.render import encode, render_blank, render_image, render_picture
from flux_pipeline.emulator.settings import EmulatorSettings

#: Earlier pictures a duplicate may repeat, per aspect ratio.
REMEMBERED: Final = 64

_Picture = tuple[str, int, int]  # prompt, seed, steps


class Pictures:
    """Renders each job's answer; remembers recent pictures for duplicates (thread-safe)."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self._recent: dict[str, deque[_Picture]] = {}
        self._lock = threading.Lock()
        #: Pictures served by kind: ``blank``, ``duplicate``.
        self.served: Counter[str] = Counter()

    def render(self, params: Params) -> bytes:
        """The encoded image answering ``params``."""
        fmt, key, seed = self.settings.output_format, params.request_key, self.settings.seed
        if draw(seed, "blank", key).random() < self.settings.blank_rate:
            with self._lock:
                self.served["blank"] += 1
            return render_blank(params.aspect_ratio, fmt)
        duplicate = draw(seed, "duplicate", key)
        if duplicate.random() < self.settings.duplicate_rate:
            with self._lock:
                earlier = list(self._recent.get(params.aspect_ratio, ()))
            if earlier:
                with self._lock:
                    self.served["duplicate"] += 1
                prompt, picture_seed, steps = duplicate.choice(earlier)
                picture = render_picture(prompt, picture_seed, steps, params.aspect_ratio)
                return encode(picture, fmt, again=True)
        image = render_image(params.prompt, params.seed, params.steps, params.aspect_ratio, fmt)
        with self._lock:
            recent = self._recent.setdefault(params.aspect_ratio, deque(maxlen=REMEMBERED))
            recent.append((params.prompt, params.seed, params.steps))
        return image

"""Facts of Segmind's Fast Flux.1 Schnell wire protocol shared by client, emulator and tables."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Final

MODEL: Final = "fast-flux-schnell"
DEFAULT_BASE_URL: Final = "https://api.segmind.com"

#: Output size (width, height) of each supported aspect ratio: Flux's ~1 megapixel grid.
ASPECT_RATIOS: Final[dict[str, tuple[int, int]]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "2:3": (832, 1216),
    "3:2": (1216, 832),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}

MIN_STEPS: Final = 1
MAX_STEPS: Final = 8
DEFAULT_STEPS: Final = 4
DEFAULT_SEED: Final = 1184522
DEFAULT_ASPECT_RATIO: Final = "1:1"

#: Job states reported by ``GET /v2/requests/{id}/status``.
QUEUED: Final = "QUEUED"
PROCESSING: Final = "PROCESSING"
COMPLETED: Final = "COMPLETED"
FAILED: Final = "FAILED"


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One image to generate; ``key`` is the caller's own name for it (e.g. a prompt id)."""

    key: str
    prompt: str
    seed: int = DEFAULT_SEED
    steps: int = DEFAULT_STEPS
    aspect_ratio: str = DEFAULT_ASPECT_RATIO
    model: str = MODEL
    #: Which of its prompt's images this is (0-based); not part of the payload or the key.
    variant: int = 0
    #: The prompt's attributes (labels) as a JSON object string, or None; not sent either.
    attributes: str | None = None
    #: The idempotency key: equal keys mean byte-identical requests (computed once, when made).
    request_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = request_key(self.model, self.prompt, self.seed, self.steps, self.aspect_ratio)
        object.__setattr__(self, "request_key", key)

    def payload(self, *, base64: bool = False) -> dict[str, Any]:
        """The JSON body Segmind expects for this request."""
        body: dict[str, Any] = {
            "prompt": self.prompt,
            "seed": self.seed,
            "steps": self.steps,
            "aspect_ratio": self.aspect_ratio,
        }
        if base64:
            body["base64"] = True
        return body


def request_key(model: str, prompt: str, seed: int, steps: int, aspect_ratio: str) -> str:
    """sha256 of the canonical JSON of ``{model, prompt, seed, steps, aspect_ratio}``."""
    canonical = json.dumps(
        {
            "aspect_ratio": aspect_ratio,
            "model": model,
            "prompt": prompt,
            "seed": seed,
            "steps": steps,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

"""Validation of the JSON body of ``POST /v1|v2/fast-flux-schnell``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flux_pipeline import protocol


class InvalidParameters(ValueError):
    """A 400: the message names the offending field."""


@dataclass(frozen=True)
class Params:
    """The generation parameters of one request, defaults filled in."""

    prompt: str
    seed: int
    steps: int
    aspect_ratio: str
    base64: bool

    @property
    def request_key(self) -> str:
        return protocol.request_key(
            protocol.MODEL, self.prompt, self.seed, self.steps, self.aspect_ratio
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_params(raw: bytes) -> Params:
    """Decode and validate a request body; raise :class:`InvalidParameters` naming the field."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidParameters(f"body: expected a JSON object ({exc})") from None
    if not isinstance(body, dict):
        raise InvalidParameters(f"body: expected a JSON object, got {type(body).__name__}")

    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidParameters("prompt: required, must be a non-empty string")
    steps = body.get("steps", protocol.DEFAULT_STEPS)
    if not _is_int(steps) or not protocol.MIN_STEPS <= steps <= protocol.MAX_STEPS:
        raise InvalidParameters(
            f"steps: must be an integer from {protocol.MIN_STEPS} to {protocol.MAX_STEPS},"
            f" got {steps!r}"
        )
    aspect_ratio = body.get("aspect_ratio", protocol.DEFAULT_ASPECT_RATIO)
    if aspect_ratio not in protocol.ASPECT_RATIOS:
        raise InvalidParameters(
            f"aspect_ratio: must be one of {', '.join(protocol.ASPECT_RATIOS)},"
            f" got {aspect_ratio!r}"
        )
    seed = body.get("seed", protocol.DEFAULT_SEED)
    if not _is_int(seed):
        raise InvalidParameters(f"seed: must be an integer, got {seed!r}")
    base64 = body.get("base64", False)
    if not isinstance(base64, bool):
        raise InvalidParameters(f"base64: must be a boolean, got {base64!r}")
    return Params(prompt=prompt, seed=seed, steps=steps, aspect_ratio=aspect_ratio, base64=base64)

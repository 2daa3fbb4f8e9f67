"""The texts of answers that end a run or an image, the key always masked out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx


def error_text(response: httpx.Response, scrub: Callable[[str], str]) -> str:
    """Segmind's ``error`` text of an answer (or the start of its body)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for name in ("error", "message", "detail"):
            if body.get(name):
                return scrub(str(body[name]))
    return scrub(response.text[:300].strip() or response.reason_phrase)


def key_refused(status: int, detail: str, base: str, model: str) -> str:
    """A 401/403 to a request that carried the key: what to check."""
    return (
        f"Segmind refused the API key (HTTP {status}: {detail}) at {base}. Check that "
        f"SEGMIND_API_KEY holds a valid key for this account and model {model!r}, and that "
        "SEGMIND_BASE_URL points at the right service (unset both to use the local emulator)."
    )


def out_of_credits(detail: str) -> str:
    """A 406: the account cannot pay for more images."""
    return (
        f"Segmind answered HTTP 406 ({detail}): the account behind SEGMIND_API_KEY is out of "
        "credits. Top it up and run again; images already generated are kept and not paid for "
        "twice."
    )


NO_KEY = (
    "No Segmind API key configured: set SEGMIND_API_KEY (or unset SEGMIND_BASE_URL too, to "
    "use the local emulator)."
)

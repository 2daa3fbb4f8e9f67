"""Bad image bodies (``--bad-media``): what a broken CDN or gateway sends instead of an image.

- ``oversized``: a PNG header, then zeros, ``oversized_bytes`` in all, streamed without a
  Content-Length (so only a cap on what is read protects the client);
- ``truncated``: the image cut in half, served with a matching Content-Length;
- ``html``: an HTML error page, served 200.

Which answers are bad is drawn per answer from the seed (``bad_media_rate``), so a client
that asks again may get a good one, reproducibly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from flux_pipeline.emulator.limits import Occurrences, draw
from flux_pipeline.emulator.settings import EmulatorSettings

PNG_HEADER = b"\x89PNG\r\n\x1a\n"
HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Access denied</title></head>"
    b"<body><h1>403: the edge refused this request</h1></body></html>"
)
_CHUNK = 1024 * 1024


class BadMedia:
    """Decides which image answers are bad and makes their bodies."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.kind = settings.bad_media
        self.rate = settings.bad_media_rate
        self.size = settings.oversized_bytes
        self.seed = settings.seed
        self._occurrences = Occurrences()

    def pick(self, kind: str, identity: str) -> bool:
        """True when this answer (the n-th of ``kind`` about ``identity``) is bad."""
        if self.kind is None:
            return False
        occurrence = self._occurrences.next(kind, identity)
        return draw(self.seed, "bad-media", kind, identity, occurrence).random() < self.rate

    def body(self, image: bytes) -> bytes:
        """The bad body in full (``oversized`` too: for base64 outputs)."""
        if self.kind == "truncated":
            return image[: len(image) // 2]
        if self.kind == "html":
            return HTML_PAGE
        return PNG_HEADER + bytes(self.size - len(PNG_HEADER))

    async def stream(self) -> AsyncIterator[bytes]:
        """The ``oversized`` body, chunk by chunk (never all in memory)."""
        yield PNG_HEADER
        left = self.size - len(PNG_HEADER)
        zeros = bytes(_CHUNK)
        while left > 0:
            yield zeros[: min(left, _CHUNK)]
            left -= _CHUNK

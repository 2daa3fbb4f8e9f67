"""Answer bodies read up to a cap, never further; image bodies spooled to disk past a few MiB."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Final

import httpx

from flux_pipeline.segmind.http.exceptions import AnswerTooLarge
from flux_pipeline.segmind.stats import EngineStats

#: Bytes of a JSON answer read when outputs come as URLs (status bodies are under 1 KB).
JSON_LIMIT: Final = 1024 * 1024
#: An image body is kept in memory up to this size, then spooled to a temporary file.
SPOOL_IN_MEMORY: Final = 4 * 1024 * 1024
#: Image bodies read at once: each may hold up to ``max_image_bytes`` while it is read.
BODY_READERS: Final = 3
#: Headers of a body that no longer apply once it has been read (and decoded) here.
_BODY_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


@dataclass
class MediaAnswer:
    """An answer whose 200 body may be an image: ``body`` holds it (spooled to a temporary
    file past a few MiB); other answers keep their (capped) body in ``response``."""

    response: httpx.Response
    body: IO[bytes] | None = field(default=None, repr=False)

    def __enter__(self) -> MediaAnswer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.body is not None:
            self.body.close()


def read_back(response: httpx.Response, content: bytes = b"") -> httpx.Response:
    """A streamed answer's status and headers with ``content``, the body as read here."""
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _BODY_HEADERS]
    return httpx.Response(
        response.status_code, headers=headers, content=content, request=response.request
    )


class BodyReader:
    """Reads bodies to their caps: JSON answers ``json_limit``, images ``image_limit``;
    :attr:`turns` lets at most :data:`BODY_READERS` image bodies be read at once."""

    def __init__(self, json_limit: int, image_limit: int, stats: EngineStats) -> None:
        self.json_limit = json_limit
        self.image_limit = image_limit
        self.turns = asyncio.Semaphore(BODY_READERS)
        self._stats = stats

    async def read(self, kind: str, method: str, response: httpx.Response) -> bytes:
        """The body up to ``json_limit`` bytes: past it a 200 fails, another answer is cut
        short (only its error text is used)."""
        limit = self.json_limit
        self._refuse_declared(kind, method, response, limit)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                if response.status_code == 200:
                    raise self._too_large(kind, method, f"more than {limit} bytes")
                return bytes(body[:limit])
        return bytes(body)

    async def spool(self, kind: str, method: str, response: httpx.Response) -> IO[bytes]:
        """The image body, up to ``image_limit``: in memory up to a few MiB, then in a
        temporary file, so a body's size never decides the memory it takes."""
        limit = self.image_limit
        self._refuse_declared(kind, method, response, limit)
        sink = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        try:
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise self._too_large(
                        kind, method, f"more than {limit} bytes (max_image_bytes)"
                    )
                sink.write(chunk)
            sink.seek(0)
        except BaseException:
            sink.close()
            raise
        return sink

    def _refuse_declared(
        self, kind: str, method: str, response: httpx.Response, limit: int
    ) -> None:
        declared = response.headers.get("content-length", "")
        if response.status_code == 200 and declared.isdigit() and int(declared) > limit:
            raise self._too_large(kind, method, f"{declared} bytes declared, over {limit}")

    def _too_large(self, kind: str, method: str, detail: str) -> AnswerTooLarge:
        self._stats.oversized_answers += 1
        return AnswerTooLarge(
            f"{kind}: answer too large ({detail}); not read further",
            retryable=True,
            maybe_billed=method == "POST",
        )

"""One HTTP/1.1 connection of the pool: an asyncio protocol, h11's state, a bounded buffer.

The event loop tells the connection when the server closes it, so the pool never has to ask
an idle socket. Incoming bytes wait in a buffer of at most :data:`READ_AHEAD` before the
socket is paused, so a body read slowly never piles up in memory. Every error h11 raises
leaves here as httpx's type, through :data:`H11_ERRORS` (one table, as httpx maps httpcore's).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Final

import h11
import httpx

#: Bytes received ahead of the reader before the socket is paused.
READ_AHEAD: Final = 256 * 1024

Origin = tuple[str, str, int]

#: h11's errors as httpx's: what our side refused to send, what the server sent wrong.
H11_ERRORS: Final[dict[type[h11.ProtocolError], type[httpx.ProtocolError]]] = {
    h11.LocalProtocolError: httpx.LocalProtocolError,
    h11.RemoteProtocolError: httpx.RemoteProtocolError,
}


@contextlib.contextmanager
def h11_errors_mapped(request: httpx.Request) -> Iterator[None]:
    """Raise any h11 error inside as its httpx counterpart (see :data:`H11_ERRORS`)."""
    try:
        yield
    except h11.ProtocolError as exc:
        mapped = next(to for error, to in H11_ERRORS.items() if isinstance(exc, error))
        raise mapped(str(exc), request=request) from None


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: h11's state, a bounded read buffer, and how it ended."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.h11 = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._paused = False
        self._eof = False
        self._lost: Exception | None = None
        #: Set to True when the read timed out, to False when something arrived.
        self._waiter: asyncio.Future[bool] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= READ_AHEAD and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # let asyncio close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._lost = exc
        self._wake()

    # the pool's side

    @property
    def closed(self) -> bool:
        return self._eof or self.transport is None or self.transport.is_closing()

    def reusable(self, now: float, expiry: float) -> bool:
        """Idle, open, within its keep-alive time, and nothing unasked-for arrived on it."""
        return not self.closed and not self._buffer and now - self.idle_since < expiry

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def send(self, request: httpx.Request, body: bytes) -> None:
        """Write the whole request at once (its body is in memory)."""
        assert self.transport is not None
        with h11_errors_mapped(request):
            message = h11.Request(
                method=request.method, target=request.url.raw_path, headers=request.headers.raw
            )
            data = self.h11.send(message) or b""
            if body:
                data += self.h11.send(h11.Data(data=body)) or b""
            data += self.h11.send(h11.EndOfMessage()) or b""
        self.transport.write(data)

    async def next_event(self, request: httpx.Request, read_timeout: float | None) -> h11.Event:
        """h11's next event, reading as needed; raises httpx's errors as httpcore would."""
        while True:
            try:
                with h11_errors_mapped(request):
                    event = self.h11.next_event()
            except httpx.RemoteProtocolError as exc:
                raise self._ended(request, str(exc)) from None
            if event is not h11.NEED_DATA:
                assert isinstance(event, h11.Event)
                return event
            if self._buffer:
                data = bytes(self._buffer)
                self._buffer.clear()
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                self.h11.receive_data(data)
            elif self._eof:
                if self.h11.their_state is h11.SEND_RESPONSE:
                    raise self._ended(request, "Server disconnected without sending a response.")
                self.h11.receive_data(b"")
            else:
                await self._wait(request, read_timeout)

    def _ended(self, request: httpx.Request, message: str) -> httpx.TransportError:
        if self._lost is not None:
            return httpx.ReadError(f"{message} ({self._lost})", request=request)
        return httpx.RemoteProtocolError(message, request=request)

    async def _wait(self, request: httpx.Request, read_timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if read_timeout is None else loop.call_later(read_timeout, _expire, waiter)
        try:
            timed_out = await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if timed_out:
            raise httpx.ReadTimeout("timed out reading the answer", request=request)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(False)


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)


class ResponseBody(httpx.AsyncByteStream):
    """A response body read from its connection; closing it calls ``finished`` (the pool takes
    the connection back, or closes it when the body was not read to its end)."""

    def __init__(
        self,
        conn: Connection,
        request: httpx.Request,
        timeout: float | None,
        finished: Callable[[Connection, bool], None],
    ) -> None:
        self._conn, self._request, self._timeout = conn, request, timeout
        self._finished = finished
        self._done = self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while not self._done:
            event = await conn.next_event(self._request, self._timeout)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._done = True
            else:
                raise httpx.RemoteProtocolError(f"unexpected {event!r}", request=self._request)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._finished(self._conn, self._done)

"""The engine's HTTP/1.1 connection pool: httpx's client on asyncio protocols and h11.

httpcore's pool (httpx's default transport) took about half of the engine's CPU in a build
(cProfile, 1,000 images: some 6,000 of the 15,600 Python calls per image). Each time a
request starts or ends it walks every pooled connection, for each idle one again (quadratic
in the pool's size), through anyio locks, events and cancel scopes, and asks each idle
socket whether the server closed it. Here each connection is an :class:`asyncio.Protocol`:
the event loop tells it when the server closes, so the pool is a stack of idle connections
per origin and takes one in O(1). h11 parses the messages; httpx stays the client (requests,
responses, timeouts, redirects and its exception types), so every caller is unchanged.

Incoming bytes wait in a buffer of at most :data:`_READ_AHEAD` before the socket is paused,
so a body read slowly never piles up in memory. A connection goes back to the pool only
after its whole response was read and both sides may go on; any other ending (a body cut
short, an error, a cancellation) closes it. A client behind a proxy from the environment
keeps httpx's own transport instead (see ``transport.py``).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator
from typing import Final

import h11
import httpx

#: Bytes received ahead of the reader before the socket is paused.
_READ_AHEAD: Final = 256 * 1024
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


class _Connection(asyncio.Protocol):
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
        if len(self._buffer) >= _READ_AHEAD and not self._paused and self.transport:
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
        headers = request.headers.raw
        message = h11.Request(method=request.method, target=request.url.raw_path, headers=headers)
        data = self.h11.send(message) or b""
        if body:
            data += self.h11.send(h11.Data(data=body)) or b""
        data += self.h11.send(h11.EndOfMessage()) or b""
        self.transport.write(data)

    async def next_event(self, request: httpx.Request, read_timeout: float | None) -> h11.Event:
        """h11's next event, reading as needed; raises httpx's errors as httpcore would."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
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


class _Body(httpx.AsyncByteStream):
    """A response body read from its connection; closing hands the connection back."""

    def __init__(
        self,
        pool: PooledTransport,
        conn: _Connection,
        request: httpx.Request,
        timeout: float | None,
    ) -> None:
        self._pool, self._conn, self._request, self._timeout = pool, conn, request, timeout
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
            self._pool.finished(self._conn, complete=self._done)


class PooledTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to origins directly, connections kept alive per origin (see the module).
    TLS verifies certificates with httpx's default context (``SSL_CERT_FILE`` honoured)."""

    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self._max = limits.max_connections or 100
        self._max_idle = limits.max_keepalive_connections or self._max
        self._expiry = limits.keepalive_expiry if limits.keepalive_expiry is not None else 5.0
        self._ssl = ssl_context or httpx.create_ssl_context()
        self._idle: dict[Origin, list[_Connection]] = collections.defaultdict(list)
        self._idle_count = 0
        self._open: set[_Connection] = set()
        self._slots: collections.deque[asyncio.Future[None]] = collections.deque()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        conn = await self._acquire(request, timeouts.get("connect"), timeouts.get("pool"))
        read_timeout = timeouts.get("read")
        try:
            conn.send(request, body)
            while True:
                event = await conn.next_event(request, read_timeout)
                if isinstance(event, h11.Response):
                    break
                if not isinstance(event, h11.InformationalResponse):
                    raise httpx.RemoteProtocolError(f"unexpected {event!r}", request=request)
        except BaseException:
            self.finished(conn, complete=False)
            raise
        return httpx.Response(
            event.status_code,
            headers=event.headers.raw_items(),
            stream=_Body(self, conn, request, read_timeout),
            extensions={
                "http_version": b"HTTP/" + event.http_version,
                "reason_phrase": event.reason,
            },
        )

    def finished(self, conn: _Connection, *, complete: bool) -> None:
        """The exchange on ``conn`` is over: keep it for the next request, or close it."""
        machine = conn.h11
        if complete and machine.our_state is h11.DONE and machine.their_state is h11.DONE:
            machine.start_next_cycle()
            if self._idle_count < self._max_idle and not conn.closed:
                conn.idle_since = asyncio.get_running_loop().time()
                self._idle[conn.origin].append(conn)
                self._idle_count += 1
                self._free_slot()
                return
        self._drop(conn)

    async def aclose(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
        self._idle_count = 0

    async def _acquire(
        self, request: httpx.Request, connect: float | None, pool: float | None
    ) -> _Connection:
        url = request.url
        scheme = url.scheme
        origin = (scheme, url.host, url.port or _DEFAULT_PORTS.get(scheme, 80))
        loop = asyncio.get_running_loop()
        deadline = None if pool is None else loop.time() + pool
        while True:
            conn = self._take_idle(origin, loop.time())
            if conn is not None:
                return conn
            if len(self._open) < self._max or self._close_idle_elsewhere():
                return await self._connect(request, origin, connect)
            await self._wait_for_slot(request, deadline)

    def _take_idle(self, origin: Origin, now: float) -> _Connection | None:
        stack = self._idle.get(origin)
        while stack:
            conn = stack.pop()
            self._idle_count -= 1
            if conn.reusable(now, self._expiry):
                return conn
            self._drop(conn)
        return None

    def _close_idle_elsewhere(self) -> bool:
        """Make room at the limit by closing an idle connection to another origin."""
        for stack in self._idle.values():
            if stack:
                self._idle_count -= 1
                self._drop(stack.pop(0))
                return True
        return False

    async def _connect(
        self, request: httpx.Request, origin: Origin, connect_timeout: float | None
    ) -> _Connection:
        scheme, host, port = origin
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        tls = self._ssl if scheme == "https" else None
        conn = _Connection(origin)
        self._open.add(conn)
        try:
            async with asyncio.timeout(connect_timeout):
                await asyncio.get_running_loop().create_connection(
                    lambda: conn, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            self._drop(conn)
            raise httpx.ConnectTimeout(
                f"connecting to {host}:{port} timed out", request=request
            ) from None
        except OSError as exc:
            self._drop(conn)
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=request) from None
        except BaseException:
            self._drop(conn)
            raise
        return conn

    async def _wait_for_slot(self, request: httpx.Request, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        slot: asyncio.Future[None] = loop.create_future()
        self._slots.append(slot)
        try:
            async with asyncio.timeout_at(deadline):
                await slot
        except TimeoutError:
            raise httpx.PoolTimeout("no connection free in time", request=request) from None
        finally:
            if slot in self._slots:
                self._slots.remove(slot)

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        if conn in self._open:
            self._open.discard(conn)
            self._free_slot()

    def _free_slot(self) -> None:
        while self._slots:
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_result(None)
                return

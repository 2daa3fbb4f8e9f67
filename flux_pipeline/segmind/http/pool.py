"""The engine's HTTP/1.1 connection pool: an httpx transport on asyncio protocols and h11.

httpcore's pool (httpx's default transport) walks every pooled connection each time a
request starts or ends, for each idle one again (quadratic in the pool's size), through anyio
locks, events and cancel scopes, and asks each idle socket whether the server closed it. Here
each connection is an :class:`asyncio.Protocol` that the event loop tells when the server
closes (``connection.py``), so the pool is a stack of idle connections per origin and takes
one in O(1). httpx stays the caller's API (requests, responses, timeouts, exception types);
redirects are not followed, by the pool or by its caller.

A connection goes back to the pool only after its whole response was read and both sides may
go on; any other ending (a body cut short, an error, a cancellation) closes it. A request over
the limit waits for a slot; a slot freed while its waiter was leaving goes to the next one.
An origin's addresses are raced as asyncio's "happy eyeballs" do, so one dead route costs
:data:`HAPPY_EYEBALLS_DELAY`, not the whole connect timeout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from typing import Final

import h11
import httpx

from flux_pipeline.segmind.http.connection import Connection, Origin, ResponseBody

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
#: Seconds before the next address is tried while one still connects (RFC 8305's default).
HAPPY_EYEBALLS_DELAY: Final = 0.25


class ConnectionPool(httpx.AsyncBaseTransport):
    """HTTP/1.1 to origins directly, connections kept alive per origin (see the module).
    TLS verifies certificates with httpx's default context (``SSL_CERT_FILE`` honoured)."""

    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self._max = limits.max_connections or 100
        self._max_idle = limits.max_keepalive_connections or self._max
        self._expiry = limits.keepalive_expiry if limits.keepalive_expiry is not None else 5.0
        self._ssl = ssl_context or httpx.create_ssl_context()
        self._idle: dict[Origin, list[Connection]] = collections.defaultdict(list)
        self._idle_count = 0
        self._open: set[Connection] = set()
        self._slots: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def open_connections(self) -> int:
        """Connections open now, idle or in use (each holds one of ``max_connections``)."""
        return len(self._open)

    @property
    def waiting(self) -> int:
        """Requests waiting for a connection slot now."""
        return sum(not slot.done() for slot in self._slots)

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
            stream=ResponseBody(conn, request, read_timeout, self._body_closed),
            extensions={
                "http_version": b"HTTP/" + event.http_version,
                "reason_phrase": event.reason,
            },
        )

    def _body_closed(self, conn: Connection, complete: bool) -> None:
        self.finished(conn, complete=complete)

    def finished(self, conn: Connection, *, complete: bool) -> None:
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
    ) -> Connection:
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

    def _take_idle(self, origin: Origin, now: float) -> Connection | None:
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
    ) -> Connection:
        scheme, host, port = origin
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        tls = self._ssl if scheme == "https" else None
        conn = Connection(origin)
        self._open.add(conn)
        try:
            async with asyncio.timeout(connect_timeout):
                await asyncio.get_running_loop().create_connection(
                    lambda: conn,
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls else None,
                    happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
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
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slots.append(slot)
        try:
            async with asyncio.timeout_at(deadline):
                await slot
        except BaseException as exc:
            if slot.done() and not slot.cancelled():
                self._free_slot()  # handed to us as we left (timed out, cancelled): pass it on
            else:
                with contextlib.suppress(ValueError):  # unless _free_slot skipped it already
                    self._slots.remove(slot)
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("no connection free in time", request=request) from None
            raise

    def _drop(self, conn: Connection) -> None:
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

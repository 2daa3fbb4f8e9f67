"""The connection pool's soundness over real loopback sockets: h11's errors arrive as httpx's,
a freed slot never goes to a waiter that left, and an origin's addresses are raced. Each test
repeats its scenario 20 times (``ROUNDS``): a race that loses once in a while shows here."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import h11
import httpx
import pytest

from flux_pipeline.segmind.http.connection import H11_ERRORS
from flux_pipeline.segmind.http.pool import ConnectionPool

ROUNDS = 20
_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class _Held:
    """A keep-alive server that answers each request once :meth:`release` allows it, counting
    the requests it holds (``arrived`` is set each time one arrives)."""

    def __init__(self) -> None:
        self.held = 0
        self.arrived = asyncio.Event()
        self._go = asyncio.Event()

    def release(self) -> None:
        self._go.set()

    async def until_held(self, count: int) -> None:
        while self.held < count:
            self.arrived.clear()
            await self.arrived.wait()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.held += 1
                self.arrived.set()
                await self._go.wait()
                writer.write(_ANSWER)
                await writer.drain()


@contextlib.asynccontextmanager
async def _server(handler: Any) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


async def _until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until ``condition`` holds (the pool signals no event for it)."""
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0)


def _pool(max_connections: int) -> ConnectionPool:
    return ConnectionPool(
        httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    )


def test_every_h11_error_has_its_httpx_type() -> None:
    assert set(H11_ERRORS) == set(h11.ProtocolError.__subclasses__())
    assert H11_ERRORS[h11.LocalProtocolError] is httpx.LocalProtocolError
    assert H11_ERRORS[h11.RemoteProtocolError] is httpx.RemoteProtocolError


def test_a_request_h11_refuses_is_httpx_local_protocol_error_and_frees_its_slot() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 two hundred\r\n\r\n")
        await writer.drain()

    async def scenario() -> None:
        server = _Held()
        server.release()
        pool = _pool(1)
        async with (
            _server(server) as url,
            _server(garbage) as garbled,
            httpx.AsyncClient(transport=pool, timeout=30) as client,
        ):
            for _ in range(ROUNDS):
                with pytest.raises(httpx.LocalProtocolError, match="Illegal header value"):
                    await client.get(url, headers={"x-note": "one\r\ntwo"})
                assert pool.open_connections == 0  # closed: the one slot is free
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get(garbled)
                assert (await client.get(url)).text == "ok"
        assert server.held == ROUNDS  # the refused requests never reached the server

    asyncio.run(scenario())


def test_a_slot_freed_as_its_waiter_is_cancelled_goes_to_the_next_waiter() -> None:
    async def scenario() -> None:
        server = _Held()
        server.release()
        pool = _pool(1)
        async with _server(server) as url, httpx.AsyncClient(transport=pool) as client:
            for _ in range(ROUNDS):
                holder = await client.send(client.build_request("GET", url), stream=True)
                leaving = asyncio.create_task(client.get(url))
                await _until(lambda: pool.waiting == 1)
                staying = asyncio.create_task(client.get(url, timeout=httpx.Timeout(30)))
                await _until(lambda: pool.waiting == 2)  # both wait, ``leaving`` first
                await holder.aread()
                await holder.aclose()  # the slot is handed to ``leaving`` ...
                leaving.cancel()  # ... which leaves before it can take it
                with pytest.raises(asyncio.CancelledError):
                    await leaving
                assert (await staying).text == "ok"  # would be PoolTimeout: the slot lost

    asyncio.run(scenario())


def test_cancelling_waiters_under_load_gives_every_slot_back() -> None:
    """40 requests over 4 connections; every third cancelled, some while waiting for a slot,
    some as their slot is handed to them, some while their answer is read."""

    async def round_(url: str, server: _Held, pool: ConnectionPool) -> None:
        async with httpx.AsyncClient(transport=pool, timeout=60) as client:
            tasks = [asyncio.create_task(client.get(url)) for _ in range(40)]
            await server.until_held(4)
            for task in tasks[2::6]:
                task.cancel()  # waiting for a slot
            server.release()
            for step, task in enumerate(tasks[5::6]):
                for _ in range(step % 4):
                    await asyncio.sleep(0)
                task.cancel()  # in flight, or just handed a slot
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(o, httpx.Response | asyncio.CancelledError) for o in outcomes)
            answered = [o.text for o in outcomes if isinstance(o, httpx.Response)]
            assert answered == ["ok"] * len(answered)
            assert len(answered) >= 40 - len(tasks[2::6]) - len(tasks[5::6])
            assert (pool.open_connections, pool.waiting) <= (4, 0)

            probe = _Held()  # four requests at once: all four slots are there to take
            async with _server(probe) as other:
                asked = [asyncio.create_task(client.get(other)) for _ in range(4)]
                await probe.until_held(4)
                probe.release()
                assert [r.text for r in await asyncio.gather(*asked)] == ["ok"] * 4

    async def scenario() -> None:
        for _ in range(ROUNDS):
            server = _Held()
            async with _server(server) as url:
                await round_(url, server, _pool(4))

    asyncio.run(scenario())


@contextlib.contextmanager
def _black_hole() -> Iterator[int]:
    """A port that never completes a connection: a listener whose backlog is full (the kernel
    drops further SYNs, as on a dead route). Yields its port."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    port: int = hole.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        hole.close()


def test_a_dead_first_address_costs_a_head_start_not_the_connect_timeout() -> None:
    """The resolver names a black hole first, then a live server: racing the addresses, the
    request connects to the second one long before the 60 s connect timeout."""
    asked: list[str] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        server = _Held()
        server.release()
        async with _server(server) as url:
            port = httpx.URL(url).port

            async def resolve(host: str, *args: Any, **kwargs: Any) -> list[Any]:
                asked.append(host)
                stream = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
                return [(*stream, ("127.0.0.1", hole)), (*stream, ("127.0.0.1", port))]

            with _black_hole() as hole:
                loop.getaddrinfo = resolve  # type: ignore[method-assign]
                for _ in range(ROUNDS):
                    async with httpx.AsyncClient(transport=_pool(2), timeout=60) as client:
                        assert (await client.get(f"http://pool.test:{port}/")).text == "ok"

        assert server.held == ROUNDS

    asyncio.run(scenario())
    assert asked == ["pool.test"] * ROUNDS

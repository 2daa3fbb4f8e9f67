"""The pooled transport over real sockets: an idle connection the server closed is never reused."""

from __future__ import annotations

import asyncio

import httpx

from flux_pipeline.segmind.network import PooledTransport

_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


async def _closing_server() -> tuple[asyncio.Server, list[int]]:
    """Answers one request per connection, then closes it (no ``connection: close`` said)."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_ANSWER)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0), connections


def test_a_connection_the_server_closed_is_not_reused() -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        server, connections = await _closing_server()
        port = server.sockets[0].getsockname()[1]
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
        statuses = []
        async with server, httpx.AsyncClient(transport=PooledTransport(limits)) as client:
            for _ in range(3):
                response = await client.get(f"http://127.0.0.1:{port}/")
                statuses.append(response.status_code)
                await asyncio.sleep(0.05)  # the server's close reaches us while idle
        return statuses, connections

    statuses, connections = asyncio.run(scenario())
    assert statuses == [200, 200, 200]  # a stale connection would fail "Server disconnected"
    assert len(connections) == 3


def test_a_live_idle_connection_is_reused() -> None:
    async def scenario() -> int:
        connections = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            while True:
                try:
                    await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                writer.write(_ANSWER)
                await writer.drain()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
        async with server, httpx.AsyncClient(transport=PooledTransport(limits)) as client:
            for _ in range(3):
                assert (await client.get(f"http://127.0.0.1:{port}/")).text == "ok"
        return connections

    assert asyncio.run(scenario()) == 1

"""The engine's connection pool over real sockets (plain TCP and TLS on loopback): connections
are reused only when the previous answer was read whole and the server did not close them;
every failure surfaces as the httpx error callers classify."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flux_pipeline.segmind.http.pool import ConnectionPool
from flux_pipeline.segmind.http.proxy import engine_transport
from tests.support.loopback import fast_config
from tests.support.segmind_support import batch, run_engine

#: Rounds of each proxy-routing scenario (a route decided wrong once in a while shows here).
ROUNDS = 20

_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


async def _heads(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Each request head a client sends on one connection, until it closes the connection."""
    while True:
        try:
            yield await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return


async def _serve(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    tls: ssl.SSLContext | None = None,
) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=tls)
    scheme = "https" if tls else "http"
    return server, f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


class _KeepAlive:
    """A server that answers every request of a connection ``ok``, counting connections."""

    def __init__(self) -> None:
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        async for _ in _heads(reader):
            writer.write(_ANSWER)
            await writer.drain()


def _client(max_connections: int = 4, **timeouts: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=4)
    return httpx.AsyncClient(transport=ConnectionPool(limits), timeout=httpx.Timeout(5, **timeouts))


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
        async with server, httpx.AsyncClient(transport=ConnectionPool(limits)) as client:
            for _ in range(3):
                response = await client.get(f"http://127.0.0.1:{port}/")
                statuses.append(response.status_code)
                await asyncio.sleep(0.05)  # the server's close reaches us while idle
        return statuses, connections

    statuses, connections = asyncio.run(scenario())
    assert statuses == [200, 200, 200]  # a stale connection would fail "Server disconnected"
    assert len(connections) == 3


def test_a_live_idle_connection_is_reused() -> None:
    answer = _KeepAlive()

    async def scenario() -> None:
        server, url = await _serve(answer)
        async with server, _client() as client:
            for _ in range(3):
                assert (await client.get(url)).text == "ok"

    asyncio.run(scenario())
    assert answer.connections == 1


def test_a_server_that_hangs_up_without_answering_is_a_protocol_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async def scenario() -> None:
        server, url = await _serve(hang_up)
        async with server, _client() as client:
            with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                await client.post(url, json={"a": 1})

    asyncio.run(scenario())


def test_a_body_cut_short_by_the_server_is_an_error() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, url = await _serve(cut)
        async with server, _client() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(url)

    asyncio.run(scenario())


def test_a_slow_answer_times_out_and_its_connection_is_not_reused() -> None:
    connections = 0

    async def slow_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        mine = connections
        async for _ in _heads(reader):
            if mine == 1:
                await asyncio.sleep(1)  # past the client's read timeout
            writer.write(_ANSWER)
            await writer.drain()

    async def scenario() -> str:
        server, url = await _serve(slow_first)
        async with server, _client(read=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(url)
            return (await client.get(url)).text

    assert asyncio.run(scenario()) == "ok"
    assert connections == 2  # the timed-out connection was closed, not asked again


def test_a_connection_whose_body_was_not_read_to_the_end_is_closed() -> None:
    connections = 0

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        async for _ in _heads(reader):
            body = b"x" * 1_000_000
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()

    async def scenario() -> int:
        server, url = await _serve(big)
        async with server, _client() as client:
            async with client.stream("GET", url) as response:
                async for _ in response.aiter_bytes():
                    break  # stop reading: the rest of the body is still on the wire
            whole = await client.get(url)
        return len(whole.content)

    assert asyncio.run(scenario()) == 1_000_000
    assert connections == 2


def test_requests_over_the_limit_wait_for_a_connection_or_time_out() -> None:
    live = most = 0

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal live, most
        live += 1
        most = max(most, live)
        try:
            async for _ in _heads(reader):
                await asyncio.sleep(0.1)
                writer.write(_ANSWER)
                await writer.drain()
        finally:
            live -= 1

    async def scenario() -> tuple[list[int], int, type[BaseException]]:
        server, url = await _serve(counted)
        async with server, _client(max_connections=2) as client:
            answers = await asyncio.gather(*(client.get(url) for _ in range(6)))
            at_once = most
            async with _client(max_connections=1, pool=0.05) as tight:
                first = asyncio.create_task(tight.get(url))
                await asyncio.sleep(0.02)
                with pytest.raises(httpx.PoolTimeout) as waited:
                    await tight.get(url)
                await first
        return [a.status_code for a in answers], at_once, waited.type

    statuses, at_once, error = asyncio.run(scenario())
    assert statuses == [200] * 6
    assert at_once == 2  # six requests over two connections, one at a time on each
    assert error is httpx.PoolTimeout


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and its key), as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_verifies_the_certificate_and_keeps_the_connection(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    answer = _KeepAlive()

    async def scenario() -> list[str]:
        server, url = await _serve(answer, served)
        limits = httpx.Limits(max_connections=2)
        trusting = ConnectionPool(limits, ssl_context=ssl.create_default_context(cafile=cert))
        async with server:
            async with httpx.AsyncClient(transport=trusting) as client:
                texts = [(await client.get(url)).text for _ in range(3)]
            async with httpx.AsyncClient(transport=ConnectionPool(limits)) as default:
                with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
                    await default.get(url)
        return texts

    assert asyncio.run(scenario()) == ["ok"] * 3
    assert answer.connections == 1  # kept alive for the three; the untrusting one never got in


@contextlib.contextmanager
def _forward_proxy() -> Iterator[tuple[str, list[str]]]:
    """A plain HTTP forward proxy on loopback (in its own thread); yields its URL and the
    absolute URLs it was asked for."""
    asked: list[str] = []
    started = threading.Event()
    loop = asyncio.new_event_loop()
    port: list[int] = []

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with httpx.AsyncClient(trust_env=False) as upstream:
            async for head in _heads(reader):
                line, *fields = head.decode().split("\r\n")[:-2]
                method, url, _ = line.split(" ")
                headers = dict(f.split(": ", 1) for f in fields)
                length = int(headers.get("content-length", headers.get("Content-Length", "0")))
                body = await reader.readexactly(length)
                asked.append(url)
                answer = await upstream.request(method, url, headers=headers, content=body)
                kept = [
                    f"{k}: {v}"
                    for k, v in answer.headers.items()
                    if k not in ("content-length", "transfer-encoding", "content-encoding")
                ]
                kept.append(f"content-length: {len(answer.content)}")
                status = f"HTTP/1.1 {answer.status_code} {answer.reason_phrase}"
                writer.write(("\r\n".join([status, *kept]) + "\r\n\r\n").encode() + answer.content)
                await writer.drain()
        writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(forward, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        started.set()
        async with server:
            with contextlib.suppress(asyncio.CancelledError):
                await server.serve_forever()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield f"http://127.0.0.1:{port[0]}", asked
    finally:
        for task in asyncio.all_tasks(loop):
            loop.call_soon_threadsafe(task.cancel)
        thread.join(10)
        loop.close()


def test_behind_a_proxy_from_the_environment_every_request_goes_through_it(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = emulator_factory(workers=8, step_time=0.02)
    _no_proxies(monkeypatch)
    with _forward_proxy() as (proxy, asked):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        results, stats = run_engine(fast_config(emu.url, mode="async"), batch(6))

    assert [r.status for r in results] == ["COMPLETED"] * 6
    assert len(asked) == sum(stats.requests.values())  # submits, polls, results, downloads
    assert all(url.startswith(emu.url) for url in asked)


_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "all_proxy"])
def test_a_proxy_variable_is_honoured_unless_no_proxy_names_the_host(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_proxies(monkeypatch)
    answer = _KeepAlive()
    limits = httpx.Limits(max_connections=2)

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(transport=engine_transport(limits)) as client:
            assert (await client.get(url)).text == "ok"

    async def rounds(asked: list[str]) -> str:
        server, url = await _serve(answer)
        async with server:
            for done in range(ROUNDS):
                monkeypatch.delenv("NO_PROXY", raising=False)
                await scenario(url)  # through the proxy
                monkeypatch.setenv("NO_PROXY", "localhost, 127.0.0.1")
                await scenario(url)  # straight to the server
                assert len(asked) == done + 1
        return url

    with _forward_proxy() as (proxy, asked):
        monkeypatch.setenv(variable, proxy)
        url = asyncio.run(rounds(asked))
    assert asked == [url] * ROUNDS
    assert answer.connections == 2 * ROUNDS  # one from the proxy, one from the pool, each round


def test_no_proxy_alone_keeps_the_engine_on_its_own_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_proxies(monkeypatch)
    monkeypatch.setenv("NO_PROXY", "example.com")
    answer = _KeepAlive()

    async def scenario() -> None:
        server, url = await _serve(answer)
        async with server:
            for _ in range(ROUNDS):
                transport = engine_transport(httpx.Limits(max_connections=2))
                assert isinstance(transport, ConnectionPool)
                async with httpx.AsyncClient(transport=transport) as client:
                    assert (await client.get(url)).text == "ok"

    asyncio.run(scenario())
    assert answer.connections == ROUNDS

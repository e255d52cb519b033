"""The provider client (gateway/proxy/provider_http.py) at the HTTP level, against raw servers.

Each test talks to a small raw server in the test's own loop: plain and TLS connections,
bodies larger than one write, answers with a length, in chunks and until close, an answer
read slowly (the socket pauses instead of buffering it all), timeouts, refusals, a full
pool, header injection, slots given back on every path, and an idle connection the server closed (not reused, no error).
The gateway-level behaviour (stale connections retried once, hangs, provider errors) is in
tests/faults/test_stale_connections.py, test_provider_hangs.py and test_upstream_failures.py.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.proxy.provider_http import ProviderHTTP

TIMEOUT = httpx.Timeout(5)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return await reader.readexactly(length) if length else b""


def answer(body: bytes, *, close: bool = False) -> bytes:
    connection = b"close" if close else b"keep-alive"
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\nconnection: %s\r\n\r\n"
            % (len(body), connection)) + body


class RawServer:
    """Counts connections; ``handler`` serves each one."""

    def __init__(self, handler: Handler) -> None:
        self.connections = 0
        self._handler = handler

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[tuple[RawServer, str]]]]:
    servers: list[asyncio.AbstractServer] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[RawServer, str]:
        raw = RawServer(handler)
        server = await asyncio.start_server(raw.serve, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        scheme = "https" if tls else "http"
        return raw, f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


async def echo_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        writer.write(answer(await read_request(reader)))
        await writer.drain()


def self_signed(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for 127.0.0.1 and a client context that trusts only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


async def post(client: ProviderHTTP, url: str, body: bytes = b"x",
               timeout: httpx.Timeout = TIMEOUT) -> tuple[int, bytes]:
    response = await client.post(httpx.URL(url + "/v1/chat/completions"), {"authorization": "Bearer k"}, body,
                                  timeout)
    return response.status_code, await response.read()


async def test_requests_and_bodies_larger_than_one_write_arrive_whole_and_connections_are_reused(serve):
    server, url = await serve(echo_forever)
    big = bytes(range(256)) * 8192  # 2 MiB: more than the socket takes at once, sent with backpressure
    client = ProviderHTTP()
    for body in (b"small", big, b"", big[:70_000]):
        assert await post(client, url, body) == (200, body)
    assert server.connections == 1  # kept alive across all four
    await client.aclose()


async def test_answers_in_chunks_or_ending_at_close_are_read_whole_and_streamed(serve):
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-ratelimit-remaining-requests: 7\r\n\r\n")
        for part in (b"data: one\n\n", b"data: two\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await read_request(reader)  # kept alive: a second request arrives on it

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: all\n\n")

    client = ProviderHTTP()
    _, url = await serve(chunked)
    response = await client.post(httpx.URL(url), {}, b"x", TIMEOUT)
    assert response.headers["x-ratelimit-remaining-requests"] == "7"
    assert [chunk async for chunk in response.chunks()] == [b"data: one\n\n", b"data: two\n\n"]
    _, url = await serve(until_close)
    assert await post(client, url) == (200, b"data: all\n\n")
    await client.aclose()


async def test_tls_connections_verify_the_server_and_carry_the_request(serve, tmp_path):
    server_tls, client_tls = self_signed(tmp_path)
    _, url = await serve(echo_forever, tls=server_tls)
    assert await post(ProviderHTTP(tls_context=client_tls), url, b"over tls") == (200, b"over tls")
    untrusting = ssl.create_default_context()  # the system's CAs only: the self-signed server is refused
    with pytest.raises(httpx.ConnectError):
        await post(ProviderHTTP(tls_context=untrusting), url)


async def test_an_answer_read_slowly_pauses_the_socket_instead_of_filling_memory(serve):
    sent = 0
    total = 64 << 20

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        block = b"x" * (256 << 10)
        while sent < total:
            writer.write(block)
            await writer.drain()  # blocks while the client does not read
            sent += len(block)

    _, url = await serve(flood)
    response = await ProviderHTTP().post(httpx.URL(url), {}, b"x", TIMEOUT)
    chunks = response.chunks()
    received = len(await chunks.__anext__())
    await asyncio.sleep(1.0)  # a slow reader: the server keeps trying to send meanwhile
    assert sent < 16 << 20, f"{sent >> 20} MiB sent to a reader that took one chunk"
    received += sum([len(chunk) async for chunk in chunks])
    assert sent == total and received == total


async def test_timeouts_refusals_a_full_pool_and_unsafe_headers_raise_httpx_exceptions(serve):
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    _, url = await serve(silent)
    client = ProviderHTTP(max_connections=1)
    with pytest.raises(httpx.ReadTimeout):
        await post(client, url, timeout=httpx.Timeout(5, read=0.2))
    hanging = asyncio.create_task(post(client, url))  # holds the only slot
    await asyncio.sleep(0.1)
    with pytest.raises(httpx.PoolTimeout):
        await post(client, url, timeout=httpx.Timeout(5, pool=0.2))
    hanging.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hanging
    with pytest.raises(httpx.ReadTimeout):  # the cancelled request gave its slot back
        await post(client, url, timeout=httpx.Timeout(5, read=0.2, pool=0.2))
    with pytest.raises(httpx.LocalProtocolError):  # a caller's "key" must not end the header line
        await client.post(httpx.URL(url), {"authorization": "Bearer k\r\nx-injected: 1"}, b"x", TIMEOUT)
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(httpx.ConnectError):
        await post(client, closed)


async def test_an_idle_connection_the_server_closed_is_not_reused(serve):
    requests_per_connection: list[int] = []

    async def one_then_close_when_idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests_per_connection.append(0)
        await read_request(reader)
        requests_per_connection[-1] += 1
        writer.write(answer(b"first"))  # says keep-alive...
        await writer.drain()
        await asyncio.sleep(0.05)  # ...then closes it while it sits idle in the pool

    _, url = await serve(one_then_close_when_idle)
    client = ProviderHTTP()
    assert await post(client, url) == (200, b"first")
    await asyncio.sleep(0.3)
    assert await post(client, url) == (200, b"first")
    # The second request went out on a new connection: none was sent into the closed one.
    assert requests_per_connection == [1, 1]


async def test_every_request_gives_its_slot_back_answered_streamed_abandoned_failed_or_cancelled(serve):
    async def by_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await read_request(reader)
            if body == b"hang":
                await asyncio.sleep(30)
            status = b"503 Service Unavailable" if body == b"fail" else b"200 OK"
            payload = b"y" * (3 << 20) if body == b"big" else body
            writer.write(b"HTTP/1.1 %s\r\ncontent-length: %d\r\n\r\n%s" % (status, len(payload), payload))
            await writer.drain()

    _, url = await serve(by_body)
    client = ProviderHTTP(max_connections=2)
    assert await post(client, url, b"whole") == (200, b"whole")
    assert await post(client, url, b"fail") == (503, b"fail")
    streamed = await client.post(httpx.URL(url), {}, b"big", TIMEOUT)
    assert sum([len(chunk) async for chunk in streamed.chunks()]) == 3 << 20
    abandoned = await client.post(httpx.URL(url), {}, b"big", TIMEOUT)
    chunks = abandoned.chunks()
    await chunks.__anext__()
    await chunks.aclose()  # the caller walks away mid-answer: that connection is closed, not reused
    with pytest.raises(httpx.ReadTimeout):
        await post(client, url, b"hang", timeout=httpx.Timeout(5, read=0.1))
    cancelled = asyncio.create_task(post(client, url, b"hang"))
    await asyncio.sleep(0.1)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert client._in_flight == 0 and not client._slot_waiters
    # Both slots free: two requests at once still go through.
    assert await asyncio.gather(post(client, url, b"a"), post(client, url, b"b")) == [(200, b"a"), (200, b"b")]

"""Hostile and broken peers against common's server: each gets a clear answer and costs only itself.

Every test runs an in-process server on 127.0.0.1, sends it something wrong
from a raw socket, checks the answer (a proper HTTP error with a short text
body, or the right close code), then checks that a well-behaved client still
gets its echo and that nothing was logged at ERROR level (no traceback).
"""

import asyncio
import contextlib
import logging
import socket
import ssl
import time
import tracemalloc

import pytest

from common import CloseCode, ConnectionClosedError, InvalidStatus, State, connect, serve
from common.http11 import MAX_HEAD, MAX_HEADERS, MAX_LINE

try:                                    # tests/ as a package or as a plain directory
    from .helpers import BOUND, echo, run, serving, wait_until
except ImportError:
    from helpers import BOUND, echo, run, serving, wait_until

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
HANDSHAKE = (
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()


@pytest.fixture
def no_errors(caplog):
    """Fail the test if anything (common, asyncio, ...) logged at ERROR or a traceback."""
    caplog.set_level(logging.INFO)
    yield caplog
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, "logged: " + "; ".join(f"{r.name} {r.levelname}: {r.getMessage()}" for r in bad)


async def still_serving(srv):
    """A well-behaved client still gets its echo: the bad peer cost only itself."""
    async with connect(srv.url, open_timeout=BOUND) as ws:
        await ws.send("still here")
        assert await asyncio.wait_for(ws.recv(), BOUND) == "still here"


async def open_raw(srv, nodelay=False):
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    if nodelay:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def read_to_end(reader):
    """Everything until the server closes; a reset after a complete answer counts as the end."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(65536), BOUND):
            chunks.append(chunk)
    return b"".join(chunks)


def parse_http_error(answer):
    """(status, headers, body) of a complete HTTP/1.1 answer; checks it is a proper short text error."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    assert sep, f"no complete HTTP answer: {answer[:200]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
    assert headers["content-type"].startswith("text/plain")
    assert int(headers["content-length"]) == len(body), "Content-Length must match the body"
    assert headers["connection"] == "close"
    assert 0 < len(body) < 512 and body.decode().strip(), "a short text body that says what was wrong"
    return int(status), headers, body.decode()


async def http_exchange(srv, data):
    reader, writer = await open_raw(srv)
    writer.write(data)
    answer = await read_to_end(reader)
    writer.close()
    return parse_http_error(answer)


# ------------------------------------------------------------------ handshakes

LONG_TARGET = b"/" + b"a" * (MAX_LINE + 10)


BAD_REQUESTS = [
    ("request line over MAX_LINE", b"GET " + LONG_TARGET + b" HTTP/1.1\r\nHost: x\r\n\r\n", {414}),
    ("header line over MAX_LINE", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_LINE + 10) + b"\r\n\r\n",
     {431, 400}),
    ("head over MAX_HEAD", b"GET / HTTP/1.1\r\nHost: x\r\n"
     + b"".join(b"X-%d: %s\r\n" % (i, b"c" * 4000) for i in range(MAX_HEAD // 4000 + 2)) + b"\r\n", {431}),
    ("request line with no end, over MAX_HEAD", b"GET /" + b"a" * (2 * MAX_HEAD), {414}),
    ("too many headers", HANDSHAKE[:-2] + b"".join(b"X-%d: y\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n",
     {431}),
    ("garbage bytes", bytes(range(256)) + b"\r\n\r\n", {400}),
    ("binary garbage with no line end", bytes(range(200, 256)) * 10, {400}),
    ("HTTP/1.0", HANDSHAKE.replace(b"HTTP/1.1", b"HTTP/1.0"), {400}),
    ("a request with a body", HANDSHAKE[:-2] + b"Content-Length: 5\r\n\r\nhello", {400}),
    ("a chunked body", HANDSHAKE[:-2] + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    ("POST", HANDSHAKE.replace(b"GET", b"POST"), {405}),
    ("absolute-form target without a host", HANDSHAKE.replace(b"GET /", b"GET http:///"), {400}),
    ("NUL in a header value", HANDSHAKE[:-2] + b"X-Nul: a\x00b\r\n\r\n", {400}),
    ("obsolete line folding", HANDSHAKE[:-2] + b"X-Fold: a\r\n  b\r\n\r\n", {400}),
]


@pytest.mark.parametrize("name, request_bytes, statuses", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_bad_handshake_gets_a_clear_http_error(name, request_bytes, statuses, no_errors):
    """Each malformed or oversized request gets its HTTP error at once, with a short text body."""

    async def main():
        async with serving(open_timeout=BOUND) as srv:
            started = time.monotonic()
            status, headers, body = await http_exchange(srv, request_bytes)
            assert status in statuses, f"{name}: {status} {body}"
            assert time.monotonic() - started < BOUND / 2, "answered at once, not after open_timeout"
            if status == 405:
                assert headers["allow"] == "GET"
            await still_serving(srv)

    run(main())


def test_handshake_split_across_hundreds_of_tiny_writes_succeeds(no_errors):
    """A request that arrives one byte per TCP segment is reassembled and accepted."""

    async def main():
        async with serving() as srv:
            reader, writer = await open_raw(srv, nodelay=True)
            request = HANDSHAKE[:-2] + b"X-Padding: " + b"p" * 200 + b"\r\n\r\n"
            assert len(request) > 300
            for i in range(len(request)):
                writer.write(request[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0)  # let each byte go out on its own
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
            assert head.startswith(b"HTTP/1.1 101 ")
            writer.write(b"\x81\x82\x00\x00\x00\x00hi")  # masked "hi", with a zero key
            assert await asyncio.wait_for(reader.readexactly(4), BOUND) == b"\x81\x02hi"
            writer.close()
            await still_serving(srv)

    run(main())


def test_client_that_sends_nothing_is_closed_after_open_timeout(no_errors):
    """A connection that never starts a handshake is closed once open_timeout passes, not before."""

    async def main():
        async with serving(open_timeout=0.5) as srv:
            reader, writer = await open_raw(srv)
            started = time.monotonic()
            assert await read_to_end(reader) == b""
            assert 0.45 <= time.monotonic() - started < 0.5 + 2
            writer.close()
            await still_serving(srv)

    run(main())


def test_slowloris_is_closed_by_the_handshake_deadline(no_errors):
    """One byte every 0.1 s does not reset the deadline: the whole handshake must fit in open_timeout."""

    async def main():
        async with serving(open_timeout=0.5) as srv:
            reader, writer = await open_raw(srv, nodelay=True)
            started = time.monotonic()
            closed = asyncio.ensure_future(read_to_end(reader))
            sent = 0
            # The handshake takes ~15 s at this pace; the server must not wait for it.
            while not closed.done() and sent < len(HANDSHAKE) - 1:
                writer.write(HANDSHAKE[sent : sent + 1])
                sent += 1
                await asyncio.wait([closed], timeout=0.1)  # the client's pace, or the close
            assert closed.done(), "the slow client was never cut off"
            elapsed = time.monotonic() - started
            assert await closed == b""
            assert 0.45 <= elapsed < 0.5 + 1.0, f"closed after {elapsed:.2f} s"
            assert sent <= 10
            writer.close()
            await still_serving(srv)

    run(main())


def client_hello() -> bytes:
    """The first bytes a TLS client sends (a ClientHello), made by the ssl module without a socket."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_tls_client_hello_to_a_plain_port_gets_400_at_once(no_errors):
    """wss:// to a ws:// server: the ClientHello is not HTTP; 400 at once, no traceback."""

    async def main():
        async with serving(open_timeout=BOUND) as srv:
            hello = client_hello()
            assert hello[0] == 0x16  # a TLS handshake record
            started = time.monotonic()
            status, _, body = await http_exchange(srv, hello)
            assert status == 400 and "TLS" in body
            assert time.monotonic() - started < BOUND / 2
            await still_serving(srv)

    run(main())


def test_wss_client_against_a_plain_server_fails_cleanly(no_errors):
    """common.connect with TLS against a ws:// server fails with an SSL error, the server logs no error."""

    async def main():
        async with serving(open_timeout=BOUND) as srv:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with pytest.raises((ssl.SSLError, OSError)):
                await connect(f"wss://127.0.0.1:{srv.port}/", ssl=context, open_timeout=BOUND)
            await still_serving(srv)

    run(main())


# ---------------------------------------------------------------------- frames


async def open_websocket(srv, path="/"):
    """A raw socket that completed the opening handshake; the caller writes frames by hand."""
    reader, writer = await open_raw(srv)
    writer.write(HANDSHAKE.replace(b"GET / ", f"GET {path} ".encode()))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
    assert head.startswith(b"HTTP/1.1 101 ")
    return reader, writer


async def read_close_code(reader):
    """Skip data frames; return the code of the server's close frame."""
    async with asyncio.timeout(BOUND):
        while True:
            b0, b1 = await reader.readexactly(2)
            assert not b1 & 0x80, "server frames are not masked"
            length = b1 & 0x7F
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await reader.readexactly(8), "big")
            payload = await reader.readexactly(length)
            if b0 & 0x0F == 0x8:
                return int.from_bytes(payload[:2], "big")


BAD_HEADERS = [
    ("64-bit length with the top bit set", b"\x82\xff" + (2**63 + 5).to_bytes(8, "big"), CloseCode.PROTOCOL_ERROR),
    ("length far over max_size, never sent", b"\x82\xff" + (2**40).to_bytes(8, "big"), CloseCode.MESSAGE_TOO_BIG),
    ("16-bit length over max_size", b"\x81\xfe" + (5000).to_bytes(2, "big"), CloseCode.MESSAGE_TOO_BIG),
]


@pytest.mark.parametrize("name, header, code", BAD_HEADERS, ids=[case[0] for case in BAD_HEADERS])
def test_bad_frame_header_fails_the_connection_at_once(name, header, code, no_errors):
    """The close code goes out as soon as the header is read, without waiting for a payload."""
    seen = []

    async def handler(ws):
        try:
            await echo(ws)
        except ConnectionClosedError:
            seen.append(ws.close_sent.code)

    async def main():
        async with serving(handler, max_size=4096) as srv:
            reader, writer = await open_websocket(srv)
            started = time.monotonic()
            writer.write(header + b"\x00\x00\x00\x00")  # the header and mask key only
            assert await read_close_code(reader) == code
            assert time.monotonic() - started < BOUND / 2
            writer.close()
            await still_serving(srv)
        assert seen == [code]

    run(main())


def test_peer_that_stops_reading_blocks_send_and_is_dropped_by_keepalive(no_errors):
    """send() waits instead of buffering; keepalive (no pong) drops the peer; memory stays bounded."""
    async def main():
        done = asyncio.get_running_loop().create_future()
        peak = 0

        async def handler(ws):
            nonlocal peak
            if ws.path != "/flood":
                return await echo(ws)
            chunk = b"x" * 16384
            try:
                for _ in range(100_000):  # bounded; the peer stops reading long before
                    await ws.send(chunk)
                    peak = max(peak, ws.transport.get_write_buffer_size())
            except ConnectionClosedError as exc:
                done.set_result(exc)

        limits = dict(write_limit=65536, ping_interval=0.2, ping_timeout=0.3, close_timeout=0.3)
        async with serving(handler, **limits) as srv:
            reader, writer = await open_websocket(srv, "/flood")  # and then never read again
            started = time.monotonic()
            exc = await asyncio.wait_for(done, BOUND)
            assert exc.sent is not None and exc.sent.code == CloseCode.INTERNAL_ERROR  # keepalive timeout
            assert time.monotonic() - started < 0.2 + 0.3 + 0.3 + 2
            # Bounded: never more than write_limit plus one message waits in user space.
            assert peak <= 65536 + 16384 + 14
            writer.transport.abort()
            await still_serving(srv)

    run(main())


def test_peer_that_vanishes_is_detected_by_keepalive(no_errors):
    """A peer that neither reads, writes nor closes ends as ConnectionClosedError 1006/1011 in the handler."""

    async def main():
        done = asyncio.get_running_loop().create_future()

        async def handler(ws):
            try:
                await echo(ws)
            except ConnectionClosedError as exc:
                done.set_result((exc.code, ws.close_sent.code, ws.state))

        async with serving(handler, ping_interval=0.1, ping_timeout=0.2, close_timeout=0.2) as srv:
            reader, writer = await open_websocket(srv)  # silent from here on: no pong, no close
            code, sent, state = await asyncio.wait_for(done, BOUND)
            assert code in (CloseCode.ABNORMAL_CLOSURE, CloseCode.INTERNAL_ERROR)
            assert sent == CloseCode.INTERNAL_ERROR and state is State.CLOSED
            writer.transport.abort()
            await still_serving(srv)

    run(main())


@pytest.mark.parametrize("together", [False, True], ids=["message-then-eof", "handshake-message-eof-in-one-write"])
def test_half_closed_peer_still_gets_its_answer(together, no_errors):
    """shutdown(SHUT_WR) after a message: the server answers it, then closes the TCP connection cleanly."""

    async def main():
        async with serving() as srv:
            for _ in range(20):  # the race between the message and the EOF goes both ways
                reader, writer = await open_raw(srv)
                if together:
                    writer.write(HANDSHAKE + b"\x81\x82\x00\x00\x00\x00hi")
                    writer.write_eof()
                    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
                else:
                    writer.write(HANDSHAKE)
                    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
                    writer.write(b"\x81\x82\x00\x00\x00\x00hi")
                    writer.write_eof()
                rest = await asyncio.wait_for(reader.read(), BOUND)  # raises on a reset
                assert rest == b"\x81\x02hi"
                writer.close()
            await still_serving(srv)

    run(main())


# ------------------------------------------------------------ who may connect


def same_origin(origin, headers):
    """Pages served by this very server (scheme http, same host and port), and clients without Origin."""
    return origin is None or origin == "http://" + headers["Host"]


ORIGIN_CASES = [
    # (origins, Origin header or None, allowed)
    ([None, "null"], None, True),
    ([None, "null"], "null", True),
    ([None, "null"], "http://evil.example", False),
    ([None, "null"], "http://127.0.0.1", False),
    (["http://good.example"], "http://good.example", True),
    (["http://good.example"], "http://good.example.evil.example", False),
    (["http://good.example"], "HTTP://GOOD.EXAMPLE", False),
    (["http://good.example"], None, False),
    (same_origin, None, True),
    (same_origin, "http://{host}", True),
    (same_origin, "https://{host}", False),
    (same_origin, "http://{host}.evil.example", False),
    (same_origin, "http://evil.example", False),
    (same_origin, "null", False),
]


@pytest.mark.parametrize(
    "origins, origin, allowed", ORIGIN_CASES,
    ids=[f"{'same_origin' if callable(o) else o}-{h}" for o, h, _ in ORIGIN_CASES],
)
def test_origins_allow_or_refuse_with_403(origins, origin, allowed, no_errors):
    """serve(origins=...) opens listed origins and answers 403 with a text body to the rest."""

    async def main():
        async with serving(origins=origins) as srv:
            host = f"127.0.0.1:{srv.port}"
            header = b"" if origin is None else f"Origin: {origin.format(host=host)}\r\n".encode()
            request = HANDSHAKE.replace(b"Host: 127.0.0.1\r\n", f"Host: {host}\r\n".encode())[:-2] + header + b"\r\n"
            reader, writer = await open_raw(srv)
            writer.write(request)
            if allowed:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
                assert head.startswith(b"HTTP/1.1 101 ")
                writer.write(b"\x81\x82\x00\x00\x00\x00hi")
                assert await asyncio.wait_for(reader.readexactly(4), BOUND) == b"\x81\x02hi"
                writer.close()
            else:
                status, _, body = parse_http_error(await read_to_end(reader))
                writer.close()
                assert status == 403 and "origin" in body.lower()
            # common.connect sending the same Origin gets the same decision.
            opening = connect(f"ws://{host}/", origin=origin and origin.format(host=host))
            if allowed:
                async with opening as ws:
                    await ws.send("x")
                    assert await ws.recv() == "x"
            else:
                with pytest.raises(InvalidStatus) as info:
                    await opening
                assert info.value.status_code == 403

    run(main())


def test_two_origin_headers_are_refused(no_errors):
    """A request with two Origin headers is ambiguous: 403, even if both are allowed."""

    async def main():
        async with serving(origins=[None, "null"]) as srv:
            status, _, body = await http_exchange(srv, HANDSHAKE[:-2] + b"Origin: null\r\nOrigin: null\r\n\r\n")
            assert status == 403 and "more than one Origin" in body
            await still_serving(srv)

    run(main())


def test_origin_function_gets_the_request_headers(no_errors):
    """A callable origins sees the Origin (None when absent) and the request's headers."""
    calls = []

    def origins(origin, headers):
        calls.append((origin, headers["Host"], headers.get("X-Test")))
        return headers.get("X-Test") == "yes"

    async def main():
        async with serving(origins=origins) as srv:
            async with connect(srv.url, origin="http://a.example", extra_headers={"X-Test": "yes"}) as ws:
                await ws.send("ok")
                assert await ws.recv() == "ok"
            with pytest.raises(InvalidStatus) as info:
                await connect(srv.url, extra_headers={"X-Test": "no"})
            assert info.value.status_code == 403
        host = f"127.0.0.1:{srv.port}"
        assert calls == [("http://a.example", host, "yes"), (None, host, "no")]

    run(main())


# ------------------------------------------- peers that send and never read

PING = b"\x89\xfd\x00\x00\x00\x00" + b"p" * 125  # a masked 125-byte ping (mask key 0)


async def open_websocket_with_small_window(srv):
    """A raw WebSocket whose kernel receive buffer is tiny: the server's answers back up fast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(HANDSHAKE)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
    assert head.startswith(b"HTTP/1.1 101 ")
    return reader, writer


async def write_until_blocked(writer, data, limit):
    """Write ``data`` up to ``limit`` bytes in all; return how much the peer took before pushing back."""
    sent = 0
    while sent < limit:
        writer.write(data)
        sent += len(data)
        try:
            await asyncio.wait_for(writer.drain(), 1.0)
        except TimeoutError:
            break  # the server stopped reading: TCP pushes back
        except ConnectionError:
            break  # or it has already closed the connection
    return sent


def test_ping_flood_without_reading_holds_bounded_memory(no_errors):
    """Pongs nobody reads stop the server from reading more pings: memory stays near write_limit."""

    async def main():
        async with serving(ping_interval=None, write_limit=65536) as srv:
            reader, writer = await open_websocket_with_small_window(srv)
            chunk = PING * 2000  # 262 KB, the size of one of the server's reads
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                sent = await write_until_blocked(writer, chunk, 100 * len(chunk))  # 26 MB at most
                conn = next(iter(srv.connections))
                held = conn.buffered_amount()
                grown = tracemalloc.get_traced_memory()[1] - before
            finally:
                tracemalloc.stop()
            assert sent < 100 * len(chunk), "the server read every ping and queued every pong"
            assert held <= 65536 + len(chunk), held
            # The flood's own buffers (client side, in this process) included: a few MB, not 26.
            assert grown < 8 * 2**20, grown
            writer.transport.abort()
            await still_serving(srv)

    run(main())


def test_ping_flood_then_fin_without_reading_ends_within_the_timeouts(no_errors):
    """A peer that floods pings, half-closes and never reads is gone within keepalive and close_timeout."""

    async def main():
        limits = dict(ping_interval=1, ping_timeout=1, close_timeout=0.3)
        async with serving(**limits) as srv:
            reader, writer = await open_websocket_with_small_window(srv)
            conn = next(iter(srv.connections))
            await write_until_blocked(writer, PING * 2000, 40 * 2000 * len(PING))
            if not writer.transport.is_closing():
                writer.write_eof()
            await transport_gone(conn)
            writer.transport.abort()
            await still_serving(srv)

    run(main())


def test_fin_after_a_message_whose_echo_is_never_read_ends_the_blocked_send(no_errors):
    """16 MiB echoed to a peer that sends FIN and never reads: send() raises, the connection goes, shutdown is prompt."""

    async def main():
        outcome = asyncio.get_running_loop().create_future()

        async def handler(ws):
            try:
                await echo(ws)
            except BaseException as exc:  # CancelledError too: how the handler ended is the point
                outcome.set_result(exc)
                raise

        async with serving(handler, max_size=2**25, ping_interval=None, close_timeout=0.5) as srv:
            reader, writer = await open_websocket_with_small_window(srv)
            size = 2**24
            writer.write(b"\x82\xff" + size.to_bytes(8, "big") + b"\x00\x00\x00\x00")
            writer.write(bytes(size))
            await asyncio.wait_for(writer.drain(), BOUND)
            conn = next(iter(srv.connections))
            async with asyncio.timeout(BOUND):  # the echo is stuck in the server's buffer
                while conn.buffered_amount() <= conn.write_limit:
                    await asyncio.sleep(0.01)
            writer.write_eof()
            exc = await asyncio.wait_for(outcome, BOUND)
            assert isinstance(exc, ConnectionClosedError), repr(exc)
            await transport_gone(conn)
            writer.transport.abort()
            await still_serving(srv)

    run(main())


def test_shutdown_ends_a_send_blocked_on_a_peer_that_sent_fin(no_errors):
    """Server shutdown with a handler stuck in send() to a half-closed peer: the send raises, nothing is cancelled."""

    async def main():
        outcome = asyncio.get_running_loop().create_future()

        async def handler(ws):
            try:
                await ws.send(bytes(2**24))
            except BaseException as exc:
                outcome.set_result(exc)
                raise

        srv = await serve(handler, "127.0.0.1", 0, ping_interval=None, close_timeout=0.5)
        srv.port = srv.sockets[0].getsockname()[1]
        reader, writer = await open_websocket_with_small_window(srv)
        await wait_until(lambda: srv.connections and next(iter(srv.connections)).buffered_amount() > 65536)
        writer.write_eof()
        srv.close()
        await asyncio.wait_for(srv.wait_closed(), BOUND)
        exc = outcome.result()
        # Before, the handler waited out twice close_timeout and was cancelled.
        assert isinstance(exc, ConnectionClosedError), repr(exc)
        writer.transport.abort()

    run(main())


async def transport_gone(conn):
    """Wait until the server's side of the TCP connection is really closed, not just closing."""
    with contextlib.suppress(ConnectionError):
        await asyncio.wait_for(conn.writer.wait_closed(), BOUND)


def test_one_read_of_many_small_messages_queues_no_more_than_max_queue(no_errors):
    """Thousands of 6-byte messages in one write: max_queue wait, the rest stay unparsed, none is lost."""

    async def main():
        gate = asyncio.Event()

        async def handler(ws):
            await gate.wait()
            await echo(ws)

        count = 20_000
        async with serving(handler, max_queue=8) as srv:
            reader, writer = await open_websocket(srv)
            writer.write(b"".join(b"\x82\x84\x00\x00\x00\x00" + i.to_bytes(4, "big") for i in range(count)))
            await asyncio.wait_for(writer.drain(), BOUND)
            conn = next(iter(srv.connections))
            await wait_until(lambda: conn.protocol.pending >= 6 * 1000)
            assert len(conn._messages) == 8
            gate.set()
            for i in range(count):
                assert await asyncio.wait_for(reader.readexactly(6), BOUND) == b"\x82\x04" + i.to_bytes(4, "big")
            writer.close()

    run(main())


def test_close_is_answered_at_once_to_a_handler_that_only_sends(no_errors):
    """Like test1: a handler that never reads does not hold the peer's close for close_timeout."""

    async def main():
        async def handler(ws):
            while True:
                await ws.send("tick")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ws.wait_closed(), 0.05)
                    return

        async with serving(handler, close_timeout=60) as srv:
            async with connect(srv.url) as ws:
                await ws.send("hello")
                assert await asyncio.wait_for(ws.recv(), BOUND) == "tick"
                await asyncio.wait_for(ws.close(), BOUND)  # close_timeout=60 if held back
            assert ws.close_code == CloseCode.NORMAL_CLOSURE

    run(main())


@pytest.mark.parametrize("host, allowed", [("localhost", True), ("127.0.0.1", True), ("evil.example", False)])
def test_hosts_refuse_other_names_with_403_before_process_request(host, allowed, no_errors):
    """serve(hosts=...) answers 403 to a foreign Host, for the page process_request serves and for the socket."""
    asked = []

    def page(path, headers):
        asked.append(path)
        return (200, [("Content-Type", "text/plain")], b"page\n") if path == "/" else None

    async def main():
        async with serving(process_request=page, hosts=["localhost", "127.0.0.1"]) as srv:
            for path in ("/", "/ws"):
                request = HANDSHAKE.replace(b"GET / ", f"GET {path} ".encode()).replace(
                    b"Host: 127.0.0.1\r\n", f"Host: {host}:{srv.port}\r\n".encode()
                )
                answer = await http_exchange_raw(srv, request)
                if allowed:
                    assert answer.startswith(b"HTTP/1.1 200 " if path == "/" else b"HTTP/1.1 101 ")
                else:
                    status, _, body = parse_http_error(answer)
                    assert status == 403 and "evil.example" in body
            await still_serving_host(srv)

    run(main())
    assert asked[:2] == (["/", "/ws"] if allowed else ["/ws"])


async def http_exchange_raw(srv, data):
    """Send ``data``; return what the server answered up to its close, or the 101 head."""
    reader, writer = await open_raw(srv)
    writer.write(data)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
    rest = b"" if head.startswith(b"HTTP/1.1 101 ") else await read_to_end(reader)
    writer.close()
    return head + rest


async def still_serving_host(srv):
    async with connect(f"ws://localhost:{srv.port}/ws", open_timeout=BOUND) as ws:
        await ws.send("still here")
        assert await asyncio.wait_for(ws.recv(), BOUND) == "still here"

"""HTTP/1.1 edge cases of the opening handshake, on both sides (RFC 9112).

The server: a request target in absolute-form (§3.2.2) is served like its
origin-form, with its authority as the Host; a head with bare LF line ends
(§2.2) and an overlong request line (414) are answered at once. The client:
a refusal whose body never fully arrives, or whose head is too large, fails
with what is known at once. In-process servers on 127.0.0.1, raw sockets.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

try:                                    # tests/ as a package or as a plain directory
    from .helpers import BOUND, run, serving
except ImportError:
    from helpers import BOUND, run, serving

from common import Headers, ServerConnection, connect
from common.client import BODY_LIMIT
from common.exceptions import InvalidMessage, InvalidStatus
from common.http11 import MAX_HEAD, parse_request

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
# Bounds the wait for an answer that must come at once: far below the
# open_timeout the servers below get, so that only a prompt answer passes.
GUARD = BOUND / 2
OPEN_TIMEOUT = 6 * BOUND


async def exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; return (status, lower-cased headers, body) of the answer.

    A 101 is returned once its head is in (the socket stays open); anything
    else is read to the server's close (a reset after the answer, for bytes
    it did not read, counts as the close). Each read is bounded by GUARD.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = b""
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionResetError):
            while chunk := await asyncio.wait_for(reader.read(65536), GUARD):
                answer += chunk
                if answer.startswith(b"HTTP/1.1 101 ") and b"\r\n\r\n" in answer:
                    break
    finally:
        writer.close()
    head, sep, body = answer.partition(b"\r\n\r\n")
    assert sep, f"no complete answer: {answer[:200]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
    return int(status_line.split(" ")[1]), headers, body


def upgrade(target: str, host: str, origin: str | None = None) -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13"]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ------------------------------------------------------ absolute-form targets


@pytest.mark.parametrize(
    "target, path, host",
    [
        ("http://localhost:5678/", "/", "localhost:5678"),
        ("http://localhost:5678", "/", "localhost:5678"),
        ("HTTP://Example.org/chat", "/chat", "Example.org"),
        ("ws://127.0.0.1:5678/commands/?x=1", "/commands/?x=1", "127.0.0.1:5678"),
        ("https://[::1]:5678?host=a&port=1", "/?host=a&port=1", "[::1]:5678"),
        ("wss://lab.example/stream_data/", "/stream_data/", "lab.example"),
    ],
)
def test_absolute_form_target_is_read_as_its_path_with_its_authority_as_host(target, path, host):
    """RFC 9112 §3.2.2: a server MUST accept the absolute-form, and MUST ignore
    the received Host for the target's authority; an empty path is "/" (§3.2.1)."""
    request = parse_request(f"GET {target} HTTP/1.1\r\nHost: evil.example\r\nHost: x\r\nX-A: 1\r\n\r\n".encode())
    assert request.path == path
    assert request.headers.get_all("Host") == [host]
    assert request.headers.get_all("X-A") == ["1"]


@pytest.mark.parametrize(
    "target, message",
    [
        ("http:///chat", "no host in the request target"),
        ("http://?x=1", "no host in the request target"),
        ("http://user@localhost/", "a user name in the request target"),
        ("http://user:pw@localhost/", "a user name in the request target"),
        ("ftp://localhost/", "unsupported request target"),
        ("localhost:5678", "unsupported request target"),
        ("*", "unsupported request target"),
        ("chat", "unsupported request target"),
    ],
)
def test_malformed_or_foreign_absolute_targets_get_400(target, message):
    """RFC 9110 §4.2.1: an http URI without a host MUST be rejected; §4.2.4: a
    userinfo is an error; other schemes and forms are not this server's."""
    with pytest.raises(InvalidMessage, match=message) as info:
        parse_request(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    assert info.value.status == 400


def test_absolute_form_is_served_routed_and_checked_on_its_authority():
    """serve(): process_request and the handler see the origin-form path; hosts=
    and an origins function see the authority, whatever Host says."""
    seen: list[tuple[str, str]] = []

    def route(path: str, headers: Headers):
        seen.append((path, headers["Host"]))
        return None if path.startswith("/chat") else (200, [("Content-Type", "text/plain")], b"page\n")

    def same_origin(origin: str | None, headers: Headers) -> bool:
        return origin == f"http://{headers['Host']}"

    paths: list[str] = []
    opened = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        paths.append(ws.path)
        opened.set()

    async def main() -> None:
        async with serving(handler, hosts=["localhost"], origins=same_origin, process_request=route,
                           open_timeout=OPEN_TIMEOUT) as srv:
            here = f"localhost:{srv.port}"
            status, _, body = await exchange(
                srv.port, f"GET http://{here}/?x=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n".encode())
            assert (status, body) == (200, b"page\n")
            assert seen == [("/?x=1", here)]
            # The Host check applies to the authority: a foreign one gets 403 even with a good Host.
            status, _, body = await exchange(srv.port, b"GET http://evil.example/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert status == 403 and b"'evil.example' is not a name of this server" in body
            # A socket opens too, and the origins function compares the Origin with the authority.
            status, headers, _ = await exchange(
                srv.port, upgrade(f"ws://{here}/chat?room=1", "evil.example", origin=f"http://{here}"))
            assert status == 101 and headers["upgrade"] == "websocket"
            status, _, _ = await exchange(
                srv.port, upgrade(f"http://{here}/chat", here, origin="http://evil.example"))
            assert status == 403
            await asyncio.wait_for(opened.wait(), GUARD)     # the handler runs once the 101 is out
            assert paths == ["/chat?room=1"]

    run(main())


# ------------------------------------------------- line ends and long lines

BARE_LF_HEADS = {
    "all-lf": b"GET / HTTP/1.1\nHost: localhost\n\n",
    "lf-after-the-request-line": b"GET / HTTP/1.1\nHost: localhost\r\n\r\n",
    "lf-in-a-header": upgrade("/", "localhost").replace(b"Upgrade: websocket\r\n", b"Upgrade: websocket\n"),
}
# Not here: a CRLF start line, then header lines that never end in CRLF CRLF
# (common/streams.py: that head waits for open_timeout, as before).


@pytest.mark.parametrize("head", BARE_LF_HEADS.values(), ids=list(BARE_LF_HEADS))
def test_a_bare_lf_line_end_is_answered_400_at_once(head):
    """RFC 9112 §2.2: a recipient MAY take a bare LF as a line end; this server does not
    (common/streams.py says why), and says so with a 400 as soon as the line is in, not
    after open_timeout: the answer comes within GUARD, far below the server's open_timeout."""

    async def main() -> None:
        async with serving(open_timeout=OPEN_TIMEOUT) as srv:
            # The client does not close its end: only the server's answer can end the exchange.
            status, headers, body = await exchange(srv.port, head)
            assert status == 400 and headers["connection"] == "close"
            assert b"bare LF line ending in the request head" in body and b"CRLF" in body

    run(main())


def test_a_request_line_longer_than_the_whole_head_limit_gets_414():
    """RFC 9110 §15.5.15: a target too long to read is 414 (URI Too Long), not 431, ended or not;
    a head too large over many lines is still 431."""
    long_target = b"/" + b"a" * (2 * MAX_HEAD)

    async def main() -> None:
        async with serving(open_timeout=OPEN_TIMEOUT) as srv:
            for head in (b"GET " + long_target + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", b"GET " + long_target):
                status, _, body = await exchange(srv.port, head)
                assert status == 414 and b"request line too long" in body
            many_lines = b"".join(b"X-%d: %s\r\n" % (i, b"c" * 4000) for i in range(MAX_HEAD // 4000 + 2))
            status, _, body = await exchange(srv.port, b"GET / HTTP/1.1\r\nHost: localhost\r\n" + many_lines + b"\r\n")
            assert status == 431 and b"request head too large" in body

    run(main())


# --------------------------------------------------------- the client's side


@contextlib.asynccontextmanager
async def answering(answer: bytes):
    """A server on 127.0.0.1 that reads one request head, writes ``answer`` and
    keeps the connection open until the client closes it; yields its ws:// URL."""

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            while await reader.read(65536):   # until the client leaves
                pass
        writer.close()

    server = await asyncio.start_server(respond, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        server.close()
        await server.wait_closed()


async def refused(answer: bytes) -> InvalidStatus | InvalidMessage:
    """What connect() raises for ``answer``, which must come well before its open_timeout."""
    async with answering(answer) as url:
        with pytest.raises((InvalidStatus, InvalidMessage)) as info:
            await asyncio.wait_for(connect(url, open_timeout=OPEN_TIMEOUT), GUARD)
    return info.value


def test_a_refusal_whose_body_never_ends_fails_with_its_status_at_once():
    """The status line and headers are in: a 403 whose body is shorter than its Content-Length,
    on a connection the server keeps open, is InvalidStatus(403) with what came, not a TimeoutError
    after open_timeout (the answer must come within GUARD, far below it)."""
    error = run(refused(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 100\r\n\r\nForbidden: origin"))
    assert isinstance(error, InvalidStatus) and error.status_code == 403
    assert error.body == b"Forbidden: origin"
    assert "HTTP 403: Forbidden: origin" in str(error)


def test_a_refusal_with_a_large_body_is_read_only_as_far_as_the_bound():
    """A 404 with a 1 MiB page: the error keeps its first BODY_LIMIT bytes and comes at once."""
    page = b"<p>not here</p>" + b"x" * (1 << 20)
    head = b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(page)
    error = run(refused(head + page))
    assert isinstance(error, InvalidStatus) and error.status_code == 404
    assert error.body == page[:BODY_LIMIT]


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"c" * 4000) for i in range(MAX_HEAD // 4000 + 2)),
        b"HTTP/1.1 200 " + b"O" * (2 * MAX_HEAD),
    ],
    ids=["many-lines", "endless-status-line"],
)
def test_a_response_head_too_large_is_named_a_response(answer):
    """The client reads the server's answer: its error says "response head", never "request head"."""
    error = run(refused(answer))
    assert isinstance(error, InvalidMessage)
    assert "invalid answer from the server: response head too large" in str(error)
    assert "request" not in str(error)


def test_a_response_with_bare_lf_line_ends_fails_at_once():
    """RFC 9112 §2.2, as for requests: the client says what is wrong instead of waiting for open_timeout."""
    error = run(refused(b"HTTP/1.1 403 Forbidden\nContent-Length: 0\n\n"))
    assert isinstance(error, InvalidMessage)
    assert "bare LF line ending in the response head" in str(error)

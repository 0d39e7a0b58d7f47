"""Who may talk to the stage servers: Origin checks, test9's Host check, static files and commands,
and handshakes that must not open a socket (ambiguous body framing) or must say how to open one (426).

The real testN/server.py run as subprocesses (tests/stage_util.py) on
127.0.0.1. test1 to test8 accept their page opened from disk (Origin: null)
and clients without Origin; test9 accepts only the page it served itself and
answers only requests whose Host names this machine (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
from pathlib import Path

import pytest

try:                                    # tests/ as a package or as a plain directory
    from .helpers import run
    from .stage_util import running_stage
except ImportError:
    from helpers import run
    from stage_util import running_stage

from common import InvalidStatus, Opcode, connect
from common.frames import encode_frame

TIMEOUT = 5.0                           # bound on every single wait for an event
FILE_PAGES = ["test1", "test2", "test3", "test4", "test4b", "test5", "test6", "test7", "test8"]
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def socket_path(stage: str) -> str:
    return "/commands/" if stage in ("test4b", "test5", "test6", "test7", "test8", "test9") else "/"


def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send a hand-written request; return (status, headers with lower-case names, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode("latin-1") + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before a complete answer: {answer!r}"
            answer += chunk
        head_bytes, _, rest = answer.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])}
        status = int(lines[0].split(" ")[1])
        if status == 101:
            return status, headers, rest
        length = int(headers.get("content-length", "0"))
        sock.settimeout(TIMEOUT)
        while len(rest) < length and not head.startswith("HEAD "):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest


def upgrade(path: str, host: str, origin: str | None = None) -> str:
    """A WebSocket opening request with the given Host and Origin."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13"]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return "\r\n".join(lines) + "\r\n\r\n"


def assert_short_text_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> None:
    assert status == expected, (status, body)
    assert headers["content-type"].startswith("text/plain")
    assert int(headers["content-length"]) == len(body)
    assert 0 < len(body) < 300 and b"<" not in body, body


# ------------------------------------------------------------ test1 to test8


@pytest.mark.parametrize("stage", FILE_PAGES)
def test_file_page_stages_accept_null_and_no_origin_only(stage, tmp_path):
    """Their page is opened from disk (Origin: null); scripts send none; a web site's page gets 403."""
    with running_stage(stage, tmp_path=tmp_path) as server:
        path = socket_path(stage)

        async def scenario() -> None:
            for origin in (None, "null"):
                async with connect(server.url(path), origin=origin) as ws:
                    await asyncio.wait_for(await ws.ping(), TIMEOUT)
            for origin in ("http://evil.example", f"http://127.0.0.1:{server.port}", "file://"):
                with pytest.raises(InvalidStatus) as refused:
                    await connect(server.url(path), origin=origin)
                assert refused.value.status_code == 403, origin

        run(scenario())
        status, headers, body = raw_request(server.port, upgrade(path, f"127.0.0.1:{server.port}", "http://evil.example"))
        assert_short_text_error(status, headers, body, 403)
        assert b"evil.example" in body and b"not allowed" in body
    assert "Traceback" not in server.output()


# ------------------------------------------------------------------- test9


@pytest.fixture(scope="module")
def test9(tmp_path_factory):
    """One test9 server for the checks below, with --allow-host my-lab.example; its cwd holds a symlink trap."""
    folder = tmp_path_factory.mktemp("test9")
    # A server that mapped URLs to files in its folder would serve these.
    os.symlink("/etc/passwd", folder / "passwd")
    os.symlink(Path(__file__).resolve().parent.parent / "test9" / "server.py", folder / "server.py")
    with running_stage("test9", "--allow-host", "my-lab.example", "--allow-host", "Other.Example.",
                       tmp_path=folder) as server:
        yield server
    assert "Traceback" not in server.output()


def get(port: int, path: str, method: str = "GET", host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """A request through the standard library's http.client (an independent HTTP implementation)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


def assert_safe_headers(headers: dict[str, str], body: bytes, method: str = "GET") -> None:
    """Every answer says what it is, how long, not to cache it and not to guess its type."""
    assert headers["content-type"]
    if method == "HEAD":                 # the headers of the GET answer, without its body
        assert body == b"" and int(headers["content-length"]) > 0
    else:
        assert int(headers["content-length"]) == len(body)
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"


def test_test9_socket_accepts_its_own_page_and_scripts_only(test9):
    """Origin must be http://<the Host asked for> (the page it served) or absent; anything else gets 403."""
    port = test9.port
    own = f"http://127.0.0.1:{port}"

    async def scenario() -> None:
        for origin in (None, own, f"HTTP://127.0.0.1:{port}"):
            async with connect(test9.url("/commands/"), origin=origin) as ws:
                await asyncio.wait_for(await ws.ping(), TIMEOUT)
        for origin in ("null", "http://evil.example", f"http://127.0.0.1:{port + 1}", "http://127.0.0.1",
                       f"http://localhost:{port}", f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}.evil.example"):
            with pytest.raises(InvalidStatus) as refused:
                await connect(test9.url("/stream_data/"), origin=origin)
            assert refused.value.status_code == 403, origin

    run(scenario())
    # The page served as http://localhost:PORT/ asks for Host localhost:PORT: its own origin again.
    status, _, _ = raw_request(port, upgrade("/commands/", f"localhost:{port}", f"http://localhost:{port}"))
    assert status == 101
    status, headers, body = raw_request(port, upgrade("/commands/", f"127.0.0.1:{port}", "null"))
    assert_short_text_error(status, headers, body, 403)


def allowed_hosts(port: int) -> list[str]:
    return ["localhost", f"localhost:{port}", "LOCALHOST", "localhost.", "127.0.0.1", f"127.0.0.1:{port}",
            "[::1]", f"[::1]:{port}", socket.gethostname(), f"{socket.gethostname()}:{port}",
            "my-lab.example", f"my-lab.example:{port}", "other.example"]


def refused_hosts(port: int) -> list[str]:
    return ["evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.evil.example",
            "my-lab.example.evil", "127.0.0.2", "[::2]", "0.0.0.0"]


def malformed_hosts(port: int) -> list[str]:
    """Not a host at all (RFC 9110 §7.2): 400 from serve(hosts=...), before anything else too."""
    return [f"evil.example@127.0.0.1:{port}", "", "::1", f"127.0.0.1:{port}:1", "lab example"]


def test_test9_answers_requests_for_its_own_names(test9):
    """localhost, 127.0.0.1, ::1, the host name and --allow-host names, with or without the port."""
    for host in allowed_hosts(test9.port):
        status, headers, body = get(test9.port, "/", host=host)
        assert status == 200 and body.lower().startswith(b"<!doctype html"), host
        status, _, _ = raw_request(test9.port, upgrade("/stream_data/", host))
        assert status == 101, host


def test_test9_refuses_other_hosts_with_403_before_anything_else(test9):
    """DNS rebinding: a request for any other name gets 403 for the page, unknown paths and sockets alike; no host at all, 400."""
    port = test9.port
    for host in refused_hosts(port):
        for path in ("/", "/dashboard", "/nothing-here"):
            status, headers, body = raw_request(port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
            assert_short_text_error(status, headers, body, 403)
            assert_safe_headers(headers, body)
            assert b"is not a name of this server" in body      # serve(hosts=...)'s refusal
        # The rebinding page's own origin matches its Host: only the Host check stops it.
        status, headers, body = raw_request(port, upgrade("/commands/", host, f"http://{host}"))
        assert_short_text_error(status, headers, body, 403)
    for host in malformed_hosts(port):
        for path in ("/", "/commands/"):
            status, headers, body = raw_request(port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
            assert_short_text_error(status, headers, body, 400)
    for head in ("GET / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n"):
        status, headers, body = raw_request(port, head)
        assert status in (400, 403) and b"<" not in body


def test_test9_serves_an_absolute_form_request_by_its_path_and_authority(test9):
    """RFC 9112 §3.2.2: a server MUST accept GET http://HOST:PORT/ and ignore Host for the target's
    authority: the page and the sockets are routed on the path, the Host and Origin checks apply to the authority."""
    port = test9.port
    page = (Path(__file__).resolve().parent.parent / "test9" / "client.html").read_bytes()
    for target in (f"http://localhost:{port}/", f"http://127.0.0.1:{port}/dashboard?host=a", "HTTP://LOCALHOST"):
        status, headers, body = raw_request(port, f"GET {target} HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        assert (status, body) == (200, page), target
        assert_safe_headers(headers, body)
    status, headers, body = raw_request(port, f"GET http://localhost:{port}/nothing-here HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status == 404
    for target in ("http://evil.example/", f"http://evil.example:{port}/commands/"):
        status, headers, body = raw_request(port, f"GET {target} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n")
        assert_short_text_error(status, headers, body, 403)
        assert b"is not a name of this server" in body
    # The page served as http://localhost:PORT/ opens its socket; same_origin() compares its Origin with the authority.
    own = f"localhost:{port}"
    status, _, _ = raw_request(port, upgrade(f"ws://{own}/commands/", "evil.example", f"http://{own}"))
    assert status == 101
    status, headers, body = raw_request(port, upgrade(f"ws://{own}/commands/", "evil.example", "http://evil.example"))
    assert_short_text_error(status, headers, body, 403)


TRAVERSALS = [
    "/../test9/client.html", "/../server.py", "/..%2fserver.py", "/%2e%2e/server.py", "/%2e%2e%2fserver.py",
    "/%252e%252e%252fserver.py", "/dashboard/../server.py", "/dashboard/..%2f..%2fcommon%2f__init__.py",
    "/./server.py", "//etc/passwd", "/etc/passwd", "/passwd", "/server.py", "/client.html", "/test9/client.html",
    "/dashboard/client.html", "/%00", "/client.html%00", "/dashboard%00", "/dashboard%2f", "/%2fetc%2fpasswd",
    "/dashboard/.", "/..", "/.%2e/", "/log.txt", "/favicon.ico", "/.git/config", "/index.html", "/dashboard;.html",
    "/DASHBOARD", "/dashboard//", "/%5c..%5cserver.py", "/dashboard\\..\\server.py",
]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_test9_serves_the_dashboard_and_nothing_else(test9, method):
    """Traversal, encoded traversal, absolute paths, NUL and symlinks get 404; safe headers on every answer."""
    page = (Path(__file__).resolve().parent.parent / "test9" / "client.html").read_bytes()
    for path in ("/", "/dashboard", "/dashboard/", "/?host=127.0.0.1&port=1"):
        status, headers, body = get(test9.port, path, method)
        assert status == 200
        assert body == (page if method == "GET" else b"")
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert headers["content-length"] == str(len(page))
        assert_safe_headers(headers, body, method)
    for path in TRAVERSALS:
        status, headers, body = get(test9.port, path, method)
        assert status == 404, path
        assert_safe_headers(headers, body, method)
        assert headers["content-type"].startswith("text/plain")
        assert b"root:" not in body and b"import" not in body and len(body) < 200
    # A raw NUL or a space cannot even be part of a request target: 400, from the HTTP parser.
    status, _, body = raw_request(test9.port, f"{method} /\x00 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status == 400


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"])
def test_test9_other_methods_get_405(test9, method):
    """Only GET (and HEAD for the page) is answered; the rest get 405 with an Allow header."""
    path = "127.0.0.1:80" if method == "CONNECT" else "/"
    status, headers, body = raw_request(
        test9.port, f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
    assert status in (405, 400), (method, status)
    if status == 405:
        assert headers["allow"] == "GET, HEAD"
    assert_short_text_error(status, headers, body, status)
    assert_safe_headers(headers, body)


def test_test9_bad_commands_get_an_error_and_change_nothing(test9):
    """Unknown, empty, huge (100 KB) or binary commands: a short ERROR reply; the acquisition stays as it was."""
    bad = ["FLY", "", " ", "start", "START ", "STOP\n", "START\x00", "x" * 100_000, "é" * 1000,
           b"START", b"\x00\xff" * 50_000]
    period = 0.25 * 4 / 20                      # seconds between two readings a data client gets

    async def no_reading(data, window):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(data.recv(), window)

    async def scenario() -> None:
        async with connect(test9.url("/commands/"), max_size=2**21) as commands, \
                connect(test9.url("/stream_data/")) as data:
            await asyncio.wait_for(await data.ping(), TIMEOUT)
            for command in bad:                  # while stopped: nothing starts
                await commands.send(command)
                reply = await asyncio.wait_for(commands.recv(), TIMEOUT)
                assert reply.startswith("ERROR: ") and len(reply) < 120, reply[:200]
            await no_reading(data, 5 * period)
            await commands.send("START")
            assert await asyncio.wait_for(commands.recv(), TIMEOUT) == "OK: acquisition started"
            await asyncio.wait_for(data.recv(), TIMEOUT)
            for command in bad:                  # while running: nothing stops
                await commands.send(command)
                assert (await asyncio.wait_for(commands.recv(), TIMEOUT)).startswith("ERROR: ")
            for _ in range(3):                   # readings keep coming
                await asyncio.wait_for(data.recv(), TIMEOUT)
            await commands.send("STOP")
            assert await asyncio.wait_for(commands.recv(), TIMEOUT) == "OK: acquisition stopped"

    run(scenario())
    assert "x" * 200 not in test9.output()     # the console line stays short too


# A masked ping with an 8-byte payload: 14 bytes that a server which took the
# wrong Content-Length as the body's would read as a frame and answer.
SMUGGLED_PING = encode_frame(Opcode.PING, b"smuggled", mask=True, mask_key=b"\x01\x02\x03\x04")

FRAMINGS = [
    ("Content-Length: 0\r\nContent-Length: 14\r\n", SMUGGLED_PING),
    ("Content-Length: 0, 14\r\n", SMUGGLED_PING),
    ("Content-Length: 14\r\n", SMUGGLED_PING),
    ("Content-Length: 0\r\nContent-Length: 0\r\n", SMUGGLED_PING),
    ("Transfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED_PING),
    ("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n", b"0\r\n\r\n" + SMUGGLED_PING),
]


@pytest.mark.parametrize("framing, body", FRAMINGS, ids=["cl-0-then-14", "cl-list", "cl-14", "cl-0-twice",
                                                         "chunked", "chunked-and-cl"])
def test_test9_refuses_a_handshake_whose_body_could_hide_a_frame(test9, framing, body):
    """RFC 9112 §6.3: repeated or conflicting framing headers, or any body, get 400: no 101, so no frame is read."""
    assert len(SMUGGLED_PING) == 14
    head = upgrade("/commands/", f"127.0.0.1:{test9.port}")[:-2] + framing + "\r\n"
    status, headers, answer = raw_request(test9.port, head, body)
    assert_short_text_error(status, headers, answer, 400)


@pytest.mark.parametrize("head", [
    "GET /commands/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
    upgrade("/commands/", "localhost").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
], ids=["no-upgrade", "version-8"])
def test_test9_426_says_which_upgrade_and_version(test9, head):
    """RFC 9110 §15.5.22: a 426 MUST send Upgrade, and §7.8 Connection: Upgrade with it (one header, with close)."""
    status, headers, body = raw_request(test9.port, head)
    assert_short_text_error(status, headers, body, 426)
    assert headers["upgrade"] == "websocket"
    assert headers["connection"] == "Upgrade, close"
    assert headers["sec-websocket-version"] == "13"

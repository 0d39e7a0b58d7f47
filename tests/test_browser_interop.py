"""The browsers' own WebSocket against ours: both engines talk to ``python3 -m common echo``.

Each test runs in Chromium and in Firefox (the ``browser`` fixture of
conftest.py). The page is a blank one served from a loopback web site (a
secure context, so ``crypto.subtle`` can take digests); the test drives the
page's ``WebSocket`` with small helpers (``INTEROP``) and checks what the
page saw against what the server did:

* text: ASCII, multi-byte and non-BMP characters, empty and long messages;
* binary: 0 bytes to 16 MiB, the SHA-256 of what came back equal to what went;
* subprotocols: one the server selects, one it does not;
* permessage-deflate, negotiated by the browser: ``ws.extensions``, and
  compressible messages round-trip (compressed both ways in the wire view);
* close codes and reasons both ways: ``ws.close(4000, reason)`` from the
  page, 1001 "server shutting down" from the server;
* a refused handshake (test9, a page from a foreign origin: 403), seen by
  the page as a failed connection and shown in ``#status``;
* the opening handshake of a page from disk, as each engine sends it.

Where the engines differ, the test says how, and holds each to what it does.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

try:                                    # tests/ as a package or as a plain directory
    from .driver import POLL_INTERVAL, Page
    from .stage_util import running_stage
except ImportError:
    from driver import POLL_INTERVAL, Page
    from stage_util import running_stage

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0
BIG_TIMEOUT = 60.0                      # 16 MiB each way, compressed, on a loaded 2-core machine

# The page's helpers; every one returns a promise that the driver awaits.
INTEROP = """<!doctype html><meta charset="utf-8"><title>interop</title><script>
window.open_ = (url, protocols) => new Promise((resolve, reject) => {
  const ws = protocols === undefined ? new WebSocket(url) : new WebSocket(url, protocols);
  ws.binaryType = "arraybuffer";
  ws.closed = new Promise((done) => ws.addEventListener("close",
    (e) => done({ code: e.code, reason: e.reason, wasClean: e.wasClean })));
  ws.onopen = () => resolve(ws);
  ws.onerror = () => ws.closed.then((close) => reject(new Error("no connection: close " + JSON.stringify(close))));
  window.ws = ws;
});
window.echo = (data) => new Promise((resolve, reject) => {
  ws.onmessage = (event) => resolve(event.data);
  ws.closed.then((close) => reject(new Error("closed: " + JSON.stringify(close))));
  ws.send(data);
});
window.hex = async (buffer) => [...new Uint8Array(await crypto.subtle.digest("SHA-256", buffer))]
  .map((b) => b.toString(16).padStart(2, "0")).join("");
window.randomBytes = (n) => {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
  return bytes;
};
</script>"""

TEXTS = {
    "ascii": "hello, WebSocket",
    "empty": "",
    "multibyte": "héllo wörld · Ελληνικά · 日本語 · ½ € ☃",
    "non-bmp": "😀 𝄞 𐐷 🇫🇷 (four bytes each in UTF-8, two UTF-16 units in JavaScript)",
    "long": "the quick brown fox jumps over the lazy dog; " * 4000 + "😀",
}

SIZES = [0, 1, 125, 126, 65535, 65536, 2**20, 16 * 2**20]


class Echo:
    """A running ``python3 -m common echo -v``: its URL and everything it logged."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        listening = self.wait_for(lambda line: line.startswith("listening on "), "a 'listening on' line")
        self.url = listening.split("listening on ", 1)[1].strip()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")               # the end of the output
            self._changed.notify_all()

    def wait_for(self, found: Callable[[str], bool], what: str, timeout: float = TIMEOUT) -> str:
        """The first line for which ``found`` is true, waiting (bounded) for it."""
        with self._changed:
            if not self._changed.wait_for(lambda: any(map(found, self.lines)) or self.proc.poll() is not None, timeout) \
                    or not any(map(found, self.lines)):
                raise AssertionError(f"the echo server never logged {what}; it logged:\n" + "\n".join(self.lines[-30:]))
            return next(filter(found, self.lines))

    def stop(self) -> int:
        """SIGTERM, as Ctrl+C would; its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(TIMEOUT)


@contextmanager
def echo_server(*args: str) -> Iterator[Echo]:
    """``python3 -m common -v echo --port 0 ARGS``, stopped (and killed if need be) on the way out."""
    proc = subprocess.Popen([sys.executable, "-m", "common", "-v", "echo", "--port", "0", *args], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            encoding="utf-8", errors="replace")
    try:
        yield Echo(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture
def page(open_tab: Callable[..., Page], web_site: Callable[[str], str]) -> Page:
    """A blank page with the INTEROP helpers, from http://127.0.0.1:PORT/ (a secure context)."""
    return open_tab(web_site(INTEROP))


def js(value: object) -> str:
    """``value`` as a JavaScript literal."""
    return json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize("name", TEXTS)
def test_text_round_trips(name: str, page: Page) -> None:
    """Text, ASCII to non-BMP (four-byte UTF-8), comes back as it was sent."""
    text = TEXTS[name]
    with echo_server() as server:
        page.evaluate(f"open_({js(server.url)}).then(() => true)")
        back = page.evaluate(f"echo({js(text)}).then((data) => [typeof data, data])", timeout=BIG_TIMEOUT)
        assert back == ["string", text]
        # The server's echo, one frame, is the whole message in UTF-8 (the browser may fragment its own).
        server.wait_for(lambda line: "> TEXT" in line and f"[{len(text.encode())} bytes" in line, "the echoed text")


@pytest.mark.parametrize("size", SIZES, ids=[f"{size}B" for size in SIZES])
def test_binary_round_trips(size: int, page: Page) -> None:
    """Binary messages from 0 bytes to 16 MiB come back byte for byte (SHA-256 compared)."""
    with echo_server() as server:
        page.evaluate(f"open_({js(server.url)}).then(() => true)")
        sent, back, length, kind = page.evaluate(f"""(async () => {{
            const bytes = randomBytes({size});
            const data = await echo(bytes);
            return [await hex(bytes), await hex(data), data.byteLength, data.constructor.name];
        }})()""", timeout=BIG_TIMEOUT)
        assert (kind, length) == ("ArrayBuffer", size)
        assert back == sent
        # Chromium sends large messages in fragments of about 128 KiB, Firefox in one frame;
        # the server's echo is one frame of the whole message.
        server.wait_for(lambda line: "> BINARY" in line and f"[{size} bytes" in line, f"a {size}-byte echo")


def test_the_subprotocol_the_server_selects_is_the_sockets_protocol(page: Page) -> None:
    """The page offers two subprotocols; the server selects the one it knows; ws.protocol says which."""
    with echo_server("--subprotocol", "chat") as server:
        protocol = page.evaluate(f"open_({js(server.url)}, ['mqtt', 'chat']).then((ws) => ws.protocol)")
        assert protocol == "chat"
        assert page.evaluate("echo('still an echo')") == "still an echo"


def test_a_subprotocol_the_server_does_not_select(browser, page: Page) -> None:
    """The page offers only a subprotocol the server does not know: the server answers without one.

    The engines differ here. RFC 6455 §4.1 fails a connection only when the
    server names a subprotocol the client did not offer; an answer without one
    is a success with no subprotocol. Firefox does that: the socket opens with
    ``ws.protocol === ""``. Chromium fails the connection ("Sent non-empty
    'Sec-WebSocket-Protocol' header but no response was received"): error,
    then close 1006. A server that must reach both selects a subprotocol or
    refuses the handshake; it never relies on either behaviour.
    """
    with echo_server("--subprotocol", "chat") as server:
        outcome = page.evaluate(f"open_({js(server.url)}, ['mqtt']).then((ws) => 'open: ' + ws.protocol, (e) => e.message)")
        server.wait_for(lambda line: "= connection is OPEN" in line, "the connection it accepted")
        if browser.name == "firefox":
            assert outcome == "open: "
            assert page.evaluate("echo('no subprotocol, still an echo')") == "no subprotocol, still an echo"
        else:
            assert outcome.startswith("no connection: close "), outcome
            close = json.loads(outcome.removeprefix("no connection: close "))
            assert close["code"] == 1006 and not close["wasClean"], close


# What each engine offers in its opening handshake.
OFFERED_EXTENSIONS = {"chromium": "permessage-deflate; client_max_window_bits", "firefox": "permessage-deflate"}


def test_a_page_from_disk_sends_origin_null_and_offers_permessage_deflate(browser, open_tab, tmp_path) -> None:
    """The handshake as each engine sends it, from a page opened from disk (file://).

    Both send ``Origin: null`` (RFC 6454: a file page's origin is opaque) and
    ``Sec-WebSocket-Version: 13``, and both offer permessage-deflate; Chromium
    adds ``client_max_window_bits`` (it lets the server choose the window size
    of the browser's compressor), Firefox offers no parameter.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        page = tmp_path / "page.html"
        page.write_text(f"<script>new WebSocket('ws://127.0.0.1:{listener.getsockname()[1]}/from-disk')</script>")
        open_tab(page.as_uri())
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(TIMEOUT)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = connection.recv(4096)
                assert chunk, f"the browser closed before the end of its handshake: {head!r}"
                head += chunk
    request_line, *lines = head.decode("latin-1").split("\r\n\r\n")[0].split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    assert request_line == "GET /from-disk HTTP/1.1"
    assert headers["origin"] == "null"
    assert headers["sec-websocket-version"] == "13"
    assert headers["sec-websocket-extensions"] == OFFERED_EXTENSIONS[browser.name]


def test_permessage_deflate_is_negotiated_and_compressed_both_ways(page: Page) -> None:
    """The browser offers permessage-deflate, the server accepts; a compressible message goes both ways compressed."""
    text = "a compressible line of telemetry: 1.000, 2.000, 3.000\n" * 2000
    with echo_server() as server:
        extensions = page.evaluate(f"open_({js(server.url)}).then((ws) => ws.extensions)")
        assert extensions.startswith("permessage-deflate"), extensions
        assert page.evaluate(f"echo({js(text)})", timeout=BIG_TIMEOUT) == text
        size = len(text.encode())
        for direction in "<>":                  # received from the browser, sent back to it
            line = server.wait_for(lambda line: f"{direction} TEXT" in line and f"[{size} bytes" in line,
                                   f"the {direction} TEXT frame of {size} bytes")
            compressed = int(re.search(r"compressed to (\d+) bytes", line).group(1))
            assert compressed < size // 10, line


def test_the_page_closes_with_its_code_and_reason(page: Page) -> None:
    """ws.close(4000, reason): the server gets that code and reason and sends them back (RFC 6455 §5.5.1)."""
    reason = "bye from the page · ✓"
    with echo_server() as server:
        page.evaluate(f"open_({js(server.url)}).then(() => true)")
        close = page.evaluate(f"(ws.close(4000, {js(reason)}), ws.closed)")
        assert close == {"code": 4000, "reason": reason, "wasClean": True}
        payload = (4000).to_bytes(2, "big") + reason.encode()
        server.wait_for(lambda line: f"< CLOSE {payload[:24].hex(' ')}" in line, "the page's close frame")
        server.wait_for(lambda line: "= connection is CLOSED" in line, "the end of the connection")


def test_the_server_closes_with_1001_and_its_reason(page: Page) -> None:
    """The echo server stopped (SIGTERM): the page's close event has 1001 and "server shutting down", cleanly."""
    with echo_server() as server:
        page.evaluate(f"open_({js(server.url)}).then(() => true)")
        assert server.stop() == 0
        close = page.evaluate("ws.closed", timeout=TIMEOUT)
        assert close == {"code": 1001, "reason": "server shutting down", "wasClean": True}


def test_a_refused_handshake_shows_in_the_pages_status(browser, open_tab, web_site, tmp_path) -> None:
    """test9's page served by another web site: its Origin is foreign, test9 answers 403.

    The page sees a failed connection (error, then close 1006: a page cannot
    read the status of a refused handshake) and says so in #status. The
    engines differ in what they log: Chromium a console error naming the 403
    ("Unexpected response code: 403"), Firefox a script error ("can't establish
    a connection") that does not give it.
    """
    page = (ROOT / "test9" / "client.html").read_text(encoding="utf-8")
    with running_stage("test9", tmp_path=tmp_path) as server:
        tab = open_tab(web_site(page) + f"?host=127.0.0.1&port={server.port}", record_sockets=True)
        tab.wait_for("/could not|cannot|refused|rejected|failed/i.test(document.querySelector('#status').textContent)",
                     timeout=TIMEOUT, message="#status never showed the refusal")
        assert tab.evaluate("document.querySelector('#status').dataset.state") != "open"
        assert tab.evaluate("__sockets.every((s) => s.extensions === null)"), "a socket opened"
        server.wait_for_output("HTTP request -> 403: ")
        assert "asked" not in server.output()
        # What each engine tells the developer in its console (the page itself cannot know why).
        expected = {"chromium": "Error during WebSocket handshake: Unexpected response code: 403",
                    "firefox": "can’t establish a connection to the server at ws://127.0.0.1:"}[browser.name]
        deadline = time.monotonic() + TIMEOUT
        while not any(expected in line for line in tab.console):
            assert time.monotonic() < deadline, f"the console never said {expected!r}: {tab.console}"
            time.sleep(POLL_INTERVAL)

"""Drive headless Chromium over the Chrome DevTools Protocol, with our own client.

The browser tests need a real browser, and a real browser is also the best
independent peer for :func:`common.connect`: Chromium's DevTools endpoint is a
WebSocket server written by other people. So this module uses nothing but the
standard library and ``common``::

    with Browser() as browser:                  # starts Chromium, finds its port
        tab = browser.new_tab(width=1024, height=768)
        tab.navigate("file:///work/main/test1/client.html?host=127.0.0.1&port=5678")
        tab.wait_for("document.querySelectorAll('#messages > *').length >= 3")
        png = tab.screenshot()                 # PNG bytes
    # Chromium is killed and its profile folder deleted here.

How it works:

1. Chromium starts with ``--remote-debugging-port=0``: it picks a free port and
   writes it to ``DevToolsActivePort`` in the ``--user-data-dir`` (a fresh
   temporary folder), which we poll with a bound.
2. ``GET /json/version`` (``http.client``) gives the browser's WebSocket URL,
   ``ws://127.0.0.1:PORT/devtools/browser/<id>``.
3. One WebSocket, opened with :func:`common.connect`, carries every command.
   A command is a JSON text message ``{"id", "method", "params"}``; the answer
   has the same ``id``; events have a ``method`` and no ``id``. Tabs are
   opened with ``Target.createTarget`` and attached with ``flatten: true``,
   so their commands travel on the same socket with a ``sessionId``.

The tests are synchronous, the client is asyncio: the connection lives on an
event loop in a background thread, and every public method here hands a
coroutine to it and waits for the result with a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import itertools
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

try:
    import common
except ImportError:                     # run from elsewhere than the repository's root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import common

__all__ = [
    "Browser",
    "Tab",
    "CDPError",
    "JavaScriptError",
    "find_chromium",
    "png_size",
    "png_distinct_colors",
]

# Headless, no sandbox (containers run us as root), nothing that phones home
# or updates itself while a test runs, no tab treated as a background one.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    # Several tabs at once, each must behave as the one in front: a tab behind
    # others gets its timers throttled and its renderer process niced, and on
    # a loaded machine that starves it for seconds.
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
]

START_TIMEOUT = 20.0        # Chromium's first start on a loaded 2-core box can be slow
COMMAND_TIMEOUT = 15.0      # one CDP command (a large screenshot included)
WAIT_TIMEOUT = 10.0         # default bound of Tab.wait_for and Tab.navigate
POLL_INTERVAL = 0.05        # how often Tab.wait_for asks again

# A screenshot comes back base64-encoded in one JSON message: a full-HD page
# full of detail is several megabytes, far above connect()'s default 1 MiB.
MAX_MESSAGE_SIZE = 256 * 2**20


class CDPError(Exception):
    """Chromium answered a command with an error, or never answered."""


class JavaScriptError(CDPError):
    """An expression given to :meth:`Tab.evaluate` threw."""


def find_chromium() -> str | None:
    """Return the Chromium executable to use, or None if there is none.

    ``$CHROMIUM`` wins when set (a path, or a name looked up on ``$PATH``);
    otherwise ``chromium`` on ``$PATH``, then ``/usr/bin/chromium``.
    """
    wanted = os.environ.get("CHROMIUM")
    if wanted:
        return shutil.which(wanted)
    return shutil.which("chromium") or shutil.which("/usr/bin/chromium")


class Browser:
    """One headless Chromium process and one DevTools WebSocket to it.

    ``executable`` defaults to :func:`find_chromium`. ``start_timeout`` bounds
    the wait for ``DevToolsActivePort``. Use it as a context manager, or call
    :meth:`close` yourself: it always kills Chromium and deletes the profile.
    """

    def __init__(self, executable: str | None = None, *, start_timeout: float = START_TIMEOUT,
                 extra_flags: list[str] | None = None) -> None:
        executable = executable or find_chromium()
        if executable is None:
            raise FileNotFoundError("chromium not found: apt-get install chromium (or set $CHROMIUM)")
        self.executable = executable
        self.profile = Path(tempfile.mkdtemp(prefix="wslab-chromium-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cdp-loop", daemon=True)
        self.ws: common.ClientConnection | None = None
        self.ws_url = ""
        self.version: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        # (method, sessionId, predicate, future): one-shot event waiters.
        self._waiters: list[tuple[str, str | None, Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = []
        # sessionId -> callback for every event of that tab.
        self._listeners: dict[str, Callable[[str, dict[str, Any]], None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        try:
            self._start(start_timeout, extra_flags or [])
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------- lifecycle

    def _start(self, timeout: float, extra_flags: list[str]) -> None:
        self.stderr = open(self.profile / "chromium-stderr.log", "wb")
        self.process = subprocess.Popen(
            [self.executable, *CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            start_new_session=True,     # its own process group: close() kills the renderers too
        )
        port = self._read_port(timeout)
        self.version = self._http_json(port, "/json/version")
        self.ws_url = self.version["webSocketDebuggerUrl"]
        self.thread.start()
        self.ws = self._run(self._connect(), timeout)

    def _read_port(self, timeout: float) -> int:
        """Wait (bounded) for Chromium to write the port it listens on."""
        path = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while True:
            try:
                first_line = path.read_text().splitlines()[0]
                return int(first_line)
            except (FileNotFoundError, IndexError, ValueError):
                pass                    # not there yet, or half-written
            assert self.process is not None
            if self.process.poll() is not None:
                raise CDPError(f"{self.executable} exited with {self.process.returncode} before it listened; "
                               f"stderr:\n{self.stderr_tail()}")
            if time.monotonic() > deadline:
                raise CDPError(f"{self.executable} wrote no {path.name} within {timeout} s; stderr:\n{self.stderr_tail()}")
            time.sleep(0.05)

    @staticmethod
    def _http_json(port: int, path: str) -> dict[str, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=COMMAND_TIMEOUT)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise CDPError(f"GET {path} answered {response.status}: {body[:200]!r}")
            return json.loads(body)
        finally:
            connection.close()

    async def _connect(self) -> common.ClientConnection:
        # No Origin header: Chromium refuses DevTools connections whose Origin
        # it was not told to allow (--remote-allow-origins), and we send none.
        ws = await common.connect(self.ws_url, max_size=MAX_MESSAGE_SIZE, max_queue=256)
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(ws))
        return ws

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            text = (self.profile / "chromium-stderr.log").read_text(errors="replace")
        except OSError:
            return "(no stderr log)"
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Close the socket, kill Chromium (and its children), delete the profile. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.ws is not None and self.thread.is_alive():
            try:
                self._run(self.ws.close(), 5)
            except Exception:
                pass
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            if self.process.poll() is None:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(5)
        if self.process is not None:
            # Renderers and the zygote share the group; make sure none outlive us.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if hasattr(self, "stderr"):
            self.stderr.close()
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        if not self.loop.is_running():
            self.loop.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------- messaging

    def _run(self, coro: Any, timeout: float) -> Any:
        """Run ``coro`` on the background loop; wait at most ``timeout`` seconds."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    async def _read_loop(self, ws: common.ClientConnection) -> None:
        """Route every message: answers to their command, events to waiters and listeners."""
        error: BaseException | None = None
        try:
            async for text in ws:
                message = json.loads(text)
                if "id" in message:
                    future = self._pending.pop(message["id"], None)
                    if future is not None and not future.done():
                        future.set_result(message)
                    continue
                method, session = message.get("method", ""), message.get("sessionId")
                params = message.get("params", {})
                listener = self._listeners.get(session) if session else None
                if listener is not None:
                    listener(method, params)
                for waiter in list(self._waiters):
                    wanted, wanted_session, predicate, future = waiter
                    if wanted == method and wanted_session == session and not future.done() and predicate(params):
                        future.set_result(params)
                        self._waiters.remove(waiter)
        except Exception as exc:        # ConnectionClosedError, bad JSON: fail every waiter
            error = exc
        reason = CDPError(f"the DevTools connection ended: {error or 'closed'}")
        for future in [*self._pending.values(), *(w[3] for w in self._waiters)]:
            if not future.done():
                future.set_exception(reason)
        self._pending.clear()
        self._waiters.clear()

    async def _send(self, method: str, params: dict[str, Any] | None, session: str | None) -> dict[str, Any]:
        assert self.ws is not None
        command: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self._pending[command["id"]] = future
        try:
            await self.ws.send(json.dumps(command))
            answer = await future
        finally:
            self._pending.pop(command["id"], None)
        if "error" in answer:
            raise CDPError(f"{method} failed: {answer['error'].get('message')} {answer['error'].get('data', '')}".strip())
        return answer.get("result", {})

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        """Send one CDP command and return its ``result``; raise :class:`CDPError` on an error answer."""
        if self._closed:
            raise CDPError("the browser is closed")
        try:
            return self._run(self._send(method, params, session), timeout)
        except TimeoutError:
            raise CDPError(f"{method}: no answer within {timeout} s") from None

    def expect(self, method: str, *, session: str | None = None,
               predicate: Callable[[dict[str, Any]], bool] = lambda params: True) -> Future[dict[str, Any]]:
        """Start waiting for an event *before* the command that causes it; ``.result(timeout)`` waits."""
        async def register() -> asyncio.Future[dict[str, Any]]:
            future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
            self._waiters.append((method, session, predicate, future))
            return future

        inner = self._run(register(), COMMAND_TIMEOUT)

        async def wait() -> dict[str, Any]:
            try:
                return await inner
            finally:                    # cancelled or timed out: forget the waiter
                self._waiters[:] = [w for w in self._waiters if w[3] is not inner]

        return asyncio.run_coroutine_threadsafe(wait(), self.loop)

    @property
    def compression(self) -> str | None:
        """The extension negotiated on the DevTools socket (None: none)."""
        return None if self.ws is None or self.ws.extension is None else type(self.ws.extension).__name__

    # ------------------------------------------------------------------ tabs

    def new_tab(self, width: int = 1024, height: int = 768) -> Tab:
        """Open a blank tab of ``width`` x ``height`` CSS pixels (device scale 1)."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Tab(self, target, session, width, height)


class Tab:
    """One page, driven through its flattened session. Made by :meth:`Browser.new_tab`."""

    def __init__(self, browser: Browser, target: str, session: str, width: int, height: int) -> None:
        self.browser = browser
        self.target = target
        self.session = session
        self.width, self.height = width, height
        self.url = "about:blank"            # the last URL given to navigate()
        self.closed = False
        self.errors: list[str] = []         # uncaught exceptions in the page
        self.console: list[str] = []        # console.* calls, "level: text"
        # The page's WebSockets by requestId: {"url", "response"}, once "Network.enable" was called.
        self.websockets: dict[str, dict[str, Any]] = {}
        browser._listeners[session] = self._on_event
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        # Several tabs at once: each must behave as the one in front (timers,
        # requestAnimationFrame), as it would in separate windows.
        self.call("Emulation.setFocusEmulationEnabled", {"enabled": True})

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "?")
            self.errors.append(f"{text} (line {details.get('lineNumber', '?')})")
        elif method == "Runtime.consoleAPICalled":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"{params.get('type')}: {args}")
        elif method == "Network.webSocketCreated":
            self.websockets.setdefault(params["requestId"], {})["url"] = params.get("url")
        elif method == "Network.webSocketHandshakeResponseReceived":   # status, headers, as the browser got them
            self.websockets.setdefault(params["requestId"], {})["response"] = params.get("response", {})

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        """Send a CDP command to this tab."""
        return self.browser.call(method, params, session=self.session, timeout=timeout)

    def navigate(self, url: str, *, timeout: float = WAIT_TIMEOUT) -> None:
        """Load ``url`` (``file://`` or ``http://``) and wait for its load event."""
        self.url = url
        loaded = self.browser.expect("Page.loadEventFired", session=self.session)
        result = self.call("Page.navigate", {"url": url}, timeout=timeout)
        if result.get("errorText"):
            loaded.cancel()
            raise CDPError(f"navigating to {url} failed: {result['errorText']}")
        try:
            loaded.result(timeout)
        except TimeoutError:
            raise CDPError(f"{url} did not finish loading within {timeout} s") from None

    def evaluate(self, expression: str, *, timeout: float = COMMAND_TIMEOUT) -> Any:
        """Evaluate JavaScript in the page; return its value (promises are awaited)."""
        result = self.call("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True, "userGesture": True,
        }, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise JavaScriptError(f"{expression!r} threw: {text}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = WAIT_TIMEOUT, message: str = "") -> Any:
        """Poll ``expression`` until it is truthy and return its value; bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{message or 'waiting for ' + repr(expression)}: still {value!r} after {timeout} s"
                                   + (f"; page errors: {self.errors}" if self.errors else ""))
            time.sleep(POLL_INTERVAL)

    def click(self, selector: str) -> None:
        """Click the element at its centre with a real mouse event, as a person would.

        Fails if the element is missing, has no size, or is covered by another
        element at that point (the click would land on that one instead).
        """
        box = self.evaluate(f"""(() => {{
            const el = document.querySelector({json.dumps(selector)});
            if (!el) return "missing";
            el.scrollIntoView({{block: "center", inline: "center"}});
            const r = el.getBoundingClientRect();
            if (!r.width || !r.height) return "invisible";
            const x = r.left + r.width / 2, y = r.top + r.height / 2;
            const hit = document.elementFromPoint(x, y);
            if (!hit || !(hit === el || el.contains(hit))) return "covered by " + (hit ? hit.outerHTML.slice(0, 80) : "nothing");
            return [x, y];
        }})()""")
        if not isinstance(box, list):
            raise CDPError(f"cannot click {selector}: {box}")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left" if kind != "mouseMoved" else "none",
                                                    "clickCount": 0 if kind == "mouseMoved" else 1})

    def type(self, selector: str, text: str) -> None:
        """Focus the input ``selector``, clear it, and type ``text`` (input events fire as for a person)."""
        found = self.evaluate(f"""(() => {{
            const el = document.querySelector({json.dumps(selector)});
            if (!el) return false;
            el.focus(); el.select && el.select();
            return document.activeElement === el;
        }})()""")
        if not found:
            raise CDPError(f"cannot type into {selector}: missing or not focusable")
        self.call("Input.insertText", {"text": text})     # replaces the selection

    def press(self, key: str = "Enter") -> None:
        """Press and release a key in the focused element (Enter by default)."""
        codes = {"Enter": 13, "Tab": 9, "Escape": 27}
        base = {"key": key, "code": key, "windowsVirtualKeyCode": codes.get(key, 0)}
        self.call("Input.dispatchKeyEvent", {"type": "keyDown", **base, **({"text": "\r"} if key == "Enter" else {})})
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", **base})

    def text(self, selector: str) -> str | None:
        """The ``textContent`` of ``selector`` (None if missing)."""
        return self.evaluate(f"document.querySelector({json.dumps(selector)})?.textContent ?? null")

    def screenshot(self) -> bytes:
        """Capture the viewport as PNG bytes (``width`` x ``height`` pixels).

        The tab is brought to the front first: a tab behind others may not
        render a new frame, and the capture waits for one.
        """
        self.call("Page.bringToFront")
        data = self.call("Page.captureScreenshot", {"format": "png", "fromSurface": True})["data"]
        return base64.b64decode(data)

    def close(self) -> None:
        """Close the tab (its WebSockets close with it)."""
        if self.closed:
            return
        self.closed = True
        self.browser._listeners.pop(self.session, None)
        try:
            self.browser.call("Target.closeTarget", {"targetId": self.target}, timeout=5)
        except CDPError:
            pass


# ----------------------------------------------------------------- PNG checks

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """Split a PNG into (type, data) chunks, checking each CRC."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG: bad signature")
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset < len(png):
        length, kind = struct.unpack(">I4s", png[offset:offset + 8])
        data = png[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length:offset + 12 + length])
        if zlib.crc32(kind + data) != crc:
            raise ValueError(f"PNG chunk {kind!r} has a bad CRC")
        chunks.append((kind, data))
        offset += 12 + length
        if kind == b"IEND":
            break
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise ValueError("PNG must start with IHDR and end with IEND")
    return chunks


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking signature and CRCs."""
    width, height = struct.unpack(">II", _chunks(png)[0][1][:8])
    return width, height


def png_distinct_colors(png: bytes, enough: int = 64) -> int:
    """Count distinct pixel values, decoding rows until ``enough`` are found.

    A blank render is one colour; a page with text has hundreds (antialiasing)
    within its first rows, so this stops early on any real page. Supports the
    8-bit truecolour and greyscale PNGs (with or without alpha) that Chromium writes.
    """
    chunks = _chunks(png)
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color_type)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {color_type}, interlace {interlace}")
    raw = zlib.decompress(b"".join(data for kind, data in chunks if kind == b"IDAT"))
    stride = width * channels
    if len(raw) != height * (stride + 1):
        raise ValueError(f"PNG data is {len(raw)} bytes, expected {height * (stride + 1)}")
    seen: set[bytes] = set()
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 2 and not any(row):              # Up with no change: the row above again
            continue
        _unfilter(kind, row, previous, channels)
        seen.update(bytes(row[x:x + channels]) for x in range(0, stride, channels))
        if len(seen) >= enough:
            break
        previous = row
    return len(seen)


def _unfilter(kind: int, row: bytearray, prior: bytearray, bpp: int) -> None:
    """Undo one row's filter in place (PNG spec §9.2)."""
    n = len(row)
    if kind == 0:
        return
    # Fast path for flat areas (a blank page is all flat): zero deltas.
    if kind == 1 and not any(memoryview(row)[bpp:]):  # Sub, unchanged: the first pixel repeated
        row[:] = bytes(row[:bpp]) * (n // bpp)
        return
    if kind == 1:                                   # Sub
        for i in range(bpp, n):
            row[i] = (row[i] + row[i - bpp]) & 0xFF
    elif kind == 2:                                 # Up
        for i in range(n):
            row[i] = (row[i] + prior[i]) & 0xFF
    elif kind == 3:                                 # Average
        for i in range(n):
            left = row[i - bpp] if i >= bpp else 0
            row[i] = (row[i] + ((left + prior[i]) >> 1)) & 0xFF
    elif kind == 4:                                 # Paeth
        for i in range(n):
            a = row[i - bpp] if i >= bpp else 0
            b = prior[i]
            c = prior[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            predictor = a if pa <= pb and pa <= pc else b if pb <= pc else c
            row[i] = (row[i] + predictor) & 0xFF
    else:
        raise ValueError(f"bad PNG filter type {kind}")

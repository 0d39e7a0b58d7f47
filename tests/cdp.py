"""Drive headless Chromium over the Chrome DevTools Protocol, with our own client.

Chromium's DevTools endpoint is a WebSocket server written by other people,
so it is also an independent peer for :func:`common.connect`. The interface
is :class:`driver.Browser` and :class:`driver.Page`, shared with Firefox
(``tests/bidi.py``)::

    with Chromium() as browser:                 # starts Chromium, finds its port
        tab = browser.new_tab(width=1024, height=768)
        tab.navigate("file:///work/main/test1/client.html?host=127.0.0.1&port=5678")

How it works:

1. Chromium starts with ``--remote-debugging-port=0``: it picks a free port and
   writes it to ``DevToolsActivePort`` in the ``--user-data-dir`` (a fresh
   temporary folder), which we poll with a bound.
2. ``GET /json/version`` (``http.client``) gives the browser's WebSocket URL,
   ``ws://127.0.0.1:PORT/devtools/browser/<id>``.
3. One WebSocket carries every command. A command is a JSON text message
   ``{"id", "method", "params"}``; the answer has the same ``id`` and a
   ``result`` or an ``error``; events have a ``method`` and no ``id``. Tabs
   are opened with ``Target.createTarget`` and attached with ``flatten:
   true``, so their commands and events travel on the same socket with a
   ``sessionId``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
from typing import Any

try:                                    # tests/ as a package or as a plain directory
    from .driver import COMMAND_TIMEOUT, WAIT_TIMEOUT, Browser, DriverError, JavaScriptError, Page
except ImportError:
    from driver import COMMAND_TIMEOUT, WAIT_TIMEOUT, Browser, DriverError, JavaScriptError, Page

__all__ = ["Chromium", "ChromiumTab", "find_chromium", "INSTALL_HINT"]

INSTALL_HINT = "apt-get install chromium (or set $CHROMIUM)"

# A port where nothing listens: the proxy for every address but loopback.
DEAD_PROXY_PORT = 9

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
    "--disable-default-apps",
    "--disable-extensions",
    "--no-pings",
    "--disable-features=OptimizationHints,OptimizationGuideModelDownloading,NetworkTimeServiceQuerying,MediaRouter,Translate",
    # It still tries a few Google addresses (sign-in, component updates): every
    # address but loopback goes to a proxy on a closed loopback port, so nothing leaves.
    f"--proxy-server=127.0.0.1:{DEAD_PROXY_PORT}",
    "--remote-debugging-port=0",
    # Several tabs at once, each must behave as the one in front: a tab behind
    # others gets its timers throttled and its renderer process niced, and on
    # a loaded machine that starves it for seconds.
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
]


def find_chromium() -> str | None:
    """Return the Chromium executable to use, or None if there is none.

    ``$CHROMIUM`` wins when set (a path, or a name looked up on ``$PATH``);
    otherwise ``chromium`` on ``$PATH``, then ``/usr/bin/chromium``.
    """
    wanted = os.environ.get("CHROMIUM")
    if wanted:
        return shutil.which(wanted)
    return shutil.which("chromium") or shutil.which("/usr/bin/chromium")


class Chromium(Browser):
    """One headless Chromium process and one DevTools WebSocket to it."""

    name = "chromium"

    def __init__(self, executable: str | None = None, **kwargs: Any) -> None:
        executable = executable or find_chromium()
        if executable is None:
            raise FileNotFoundError(f"chromium not found: {INSTALL_HINT}")
        super().__init__(executable, **kwargs)

    def _launch(self, timeout: float) -> str:
        self._spawn([self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"])
        port = self._wait_for_file(self.profile / "DevToolsActivePort", lambda text: int(text.splitlines()[0]), timeout)
        self.version = self._http_json(port, "/json/version")
        return self.version["webSocketDebuggerUrl"]

    @staticmethod
    def _http_json(port: int, path: str) -> dict[str, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=COMMAND_TIMEOUT)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise DriverError(f"GET {path} answered {response.status}: {body[:200]!r}")
            return json.loads(body)
        finally:
            connection.close()

    @staticmethod
    def _answer(message: dict[str, Any]) -> tuple[int | None, str | None]:
        if "id" not in message:
            return None, None
        error = message.get("error")
        return message["id"], None if error is None else f"{error.get('message')} {error.get('data', '')}".strip()

    @staticmethod
    def _event_key(message: dict[str, Any]) -> str | None:
        return message.get("sessionId")

    def new_tab(self, width: int = 1024, height: int = 768, *, insecure_certs: bool = False) -> ChromiumTab:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return ChromiumTab(self, target, session, width, height, insecure_certs)


class ChromiumTab(Page):
    """One page, driven through its flattened session."""

    browser: Chromium

    def __init__(self, browser: Chromium, target: str, session: str, width: int, height: int, insecure_certs: bool) -> None:
        super().__init__(browser, session, width, height)
        self.target = target
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Log.enable")         # the browser's own messages: a WebSocket that failed, for one
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        # Several tabs at once: each must behave as the one in front (timers,
        # requestAnimationFrame), as it would in separate windows.
        self.call("Emulation.setFocusEmulationEnabled", {"enabled": True})
        if insecure_certs:              # sent to this tab's session, it concerns this tab only
            self.call("Security.setIgnoreCertificateErrors", {"ignore": True})

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        """Send a CDP command to this tab."""
        return self.browser.call(method, params, timeout=timeout, sessionId=self.key)

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "?")
            self.errors.append(f"{text} (line {details.get('lineNumber', '?')})")
        elif method == "Runtime.consoleAPICalled":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"{params.get('type')}: {args}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(f"{entry.get('level')}: {entry.get('text')}")

    def add_init_script(self, source: str) -> None:
        self.call("Page.addScriptToEvaluateOnNewDocument", {"source": source})

    def navigate(self, url: str, *, timeout: float = WAIT_TIMEOUT) -> None:
        self.url = url
        loaded = self.browser.expect("Page.loadEventFired", self.key)
        result = self.call("Page.navigate", {"url": url}, timeout=timeout)
        if result.get("errorText"):
            loaded.cancel()
            raise DriverError(f"navigating to {url} failed: {result['errorText']}")
        try:
            loaded.result(timeout)
        except TimeoutError:
            raise DriverError(f"{url} did not finish loading within {timeout} s") from None

    def evaluate(self, expression: str, *, timeout: float = COMMAND_TIMEOUT) -> Any:
        result = self.call("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True, "userGesture": True,
        }, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise JavaScriptError(f"{expression!r} threw: {text}")
        return result["result"].get("value")

    def _mouse_click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left" if kind != "mouseMoved" else "none",
                                                    "clickCount": 0 if kind == "mouseMoved" else 1})

    def _insert_text(self, text: str) -> None:
        self.call("Input.insertText", {"text": text})     # replaces the selection

    def press(self, key: str = "Enter") -> None:
        codes = {"Enter": 13, "Tab": 9, "Escape": 27}
        base = {"key": key, "code": key, "windowsVirtualKeyCode": codes[key]}
        self.call("Input.dispatchKeyEvent", {"type": "keyDown", **base, **({"text": "\r"} if key == "Enter" else {})})
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", **base})

    def screenshot(self) -> bytes:
        # A tab behind others may not render a new frame, and the capture waits for one.
        self.call("Page.bringToFront")
        data = self.call("Page.captureScreenshot", {"format": "png", "fromSurface": True})["data"]
        return base64.b64decode(data)

    def _close(self) -> None:
        self.browser.call("Target.closeTarget", {"targetId": self.target}, timeout=5)

"""Drive headless Firefox over WebDriver BiDi, with our own client.

WebDriver BiDi (W3C) is, like the DevTools protocol, JSON over one WebSocket,
so :func:`common.connect` drives Firefox as it drives Chromium (``tests/cdp.py``);
both implement :class:`driver.Browser` and :class:`driver.Page`::

    with Firefox() as browser:
        tab = browser.new_tab(width=1024, height=768)
        tab.navigate("file:///work/main/test1/client.html?host=127.0.0.1&port=5678")

How it works:

1. A fresh profile folder gets a ``user.js`` (:data:`PREFERENCES`) that turns
   off everything Firefox would fetch by itself: updates, telemetry, safe
   browsing, captive-portal and connectivity checks, remote settings, add-on
   and plugin updates. As a last guard every address but loopback goes
   through a proxy on loopback: a closed port by default, so that anything
   forgotten fails on this machine; the tests give a listening one instead
   (``proxy_port``), to see whether Firefox tried anything at all.
2. ``firefox-esr --headless --no-remote --profile DIR --remote-debugging-port 0``:
   Firefox picks a free port and writes it to ``WebDriverBiDiServer.json``
   in the profile, which we poll with a bound.
3. ``ws://127.0.0.1:PORT/session`` is the BiDi endpoint; ``session.new``
   opens the session. A command is ``{"id", "method", "params"}``; its answer
   has ``"type": "success"`` and a ``result``, or ``"type": "error"``; events
   have ``"type": "event"`` and name their tab (``context``).
4. Every tab is a window of its own (``browsingContext.create``, type
   ``window``): headless Firefox throttles a background *tab* to a few
   animation frames and timer runs a second, which two-tab tests cannot bear.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from typing import Any

try:                                    # tests/ as a package or as a plain directory
    from .driver import COMMAND_TIMEOUT, WAIT_TIMEOUT, Browser, DriverError, JavaScriptError, Page
except ImportError:
    from driver import COMMAND_TIMEOUT, WAIT_TIMEOUT, Browser, DriverError, JavaScriptError, Page

__all__ = ["Firefox", "FirefoxTab", "find_firefox", "INSTALL_HINT", "PREFERENCES"]

INSTALL_HINT = "apt-get install firefox-esr (or set $FIREFOX)"

# A port where nothing listens: by default, the proxy for every address but loopback.
DEAD_PROXY_PORT = 9

PREFERENCES: dict[str, bool | int | str] = {
    # Updates: the browser, its add-ons, search engines, plugins (Widevine, OpenH264).
    "app.update.disabledForTesting": True,
    "app.update.auto": False,
    "extensions.update.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "browser.search.update": False,
    "media.gmp-provider.enabled": False,
    "media.gmp-manager.url": "",
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-widevinecdm.force-chromium-update": False,
    # Telemetry, studies, experiments.
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.server": "",
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "app.shield.optoutstudies.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    # Remote settings: honoured in a release build because of MOZ_REMOTE_SETTINGS_DEVTOOLS=1 (see _launch).
    "services.settings.server": "data:,#remote-settings-off/v1",
    "security.remote_settings.crlite_filters.enabled": False,
    "security.OCSP.enabled": 0,
    # Safe browsing.
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.safebrowsing.provider.google.updateURL": "",
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    # Captive-portal and connectivity checks, push, geolocation, region.
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "dom.push.connection.enabled": False,
    "dom.push.serverURL": "",
    "geo.provider.network.url": "",
    "browser.region.network.url": "",
    "browser.region.update.enabled": False,
    # Start page, new-tab page and what they would fetch; no speculative connections.
    "browser.startup.page": 0,
    "browser.startup.homepage": "about:blank",
    "browser.shell.checkDefaultBrowser": False,
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.system.topstories": False,
    "browser.newtabpage.activity-stream.telemetry": False,
    "browser.topsites.contile.enabled": False,
    "identity.fxaccounts.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.http.speculative-parallel-limit": 0,
    # The last guard: whatever is left goes to a closed loopback port.
    "network.proxy.type": 1,
    "network.proxy.share_proxy_settings": True,
    "network.proxy.http": "127.0.0.1",
    "network.proxy.http_port": DEAD_PROXY_PORT,
    "network.proxy.ssl": "127.0.0.1",
    "network.proxy.ssl_port": DEAD_PROXY_PORT,
    "network.proxy.allow_hijacking_localhost": False,
}

# How Firefox words a WebSocket's connection failure in its error console.
SOCKET_FAILURE = re.compile(r"Firefox can.t establish a connection to the server at wss?://"
                            r"|The connection to wss?://\S+ was interrupted while the page was loading")

# WebDriver's codes for the keys that press() knows.
KEYS = {"Enter": "\ue007", "Tab": "\ue004", "Escape": "\ue00c"}


def find_firefox() -> str | None:
    """Return the Firefox executable to use, or None if there is none.

    ``$FIREFOX`` wins when set (a path, or a name looked up on ``$PATH``);
    otherwise ``firefox-esr`` on ``$PATH``, then ``firefox``.
    """
    wanted = os.environ.get("FIREFOX")
    if wanted:
        return shutil.which(wanted)
    return shutil.which("firefox-esr") or shutil.which("firefox")


def user_js(preferences: dict[str, bool | int | str]) -> str:
    """The text of a profile's ``user.js`` setting ``preferences``."""
    return "".join(f"user_pref({json.dumps(name)}, {json.dumps(value)});\n" for name, value in preferences.items())


def from_remote_value(value: dict[str, Any]) -> Any:
    """A BiDi serialized value (``{"type", "value"}``) as Python, as JSON would carry it.

    ``undefined`` and ``null`` are None, arrays and sets lists, objects and maps
    dicts; NaN, Infinity and -0 come as floats. Values JSON cannot carry (a
    node, a function, a window) are None, as with DevTools' ``returnByValue``.
    """
    kind = value.get("type")
    if kind in ("string", "boolean"):
        return value["value"]
    if kind == "number":
        number = value["value"]
        return float(number.replace("Infinity", "inf")) if isinstance(number, str) else number
    if kind == "bigint":
        return int(value["value"])
    if kind in ("array", "set"):
        return [from_remote_value(item) for item in value.get("value", [])]
    if kind in ("object", "map"):
        return {key if isinstance(key, str) else str(from_remote_value(key)): from_remote_value(item)
                for key, item in value.get("value", [])}
    if kind in ("date", "regexp"):
        return value["value"] if kind == "date" else f"/{value['value']['pattern']}/{value['value'].get('flags', '')}"
    return None


class Firefox(Browser):
    """One headless Firefox process and one WebDriver BiDi session over a WebSocket."""

    name = "firefox"

    def __init__(self, executable: str | None = None, *, proxy_port: int = DEAD_PROXY_PORT, **kwargs: Any) -> None:
        executable = executable or find_firefox()
        if executable is None:
            raise FileNotFoundError(f"firefox-esr not found: {INSTALL_HINT}")
        self.capabilities: dict[str, Any] = {}
        self.proxy_port = proxy_port
        super().__init__(executable, **kwargs)

    def _launch(self, timeout: float) -> str:
        preferences = {**PREFERENCES, "network.proxy.http_port": self.proxy_port, "network.proxy.ssl_port": self.proxy_port}
        (self.profile / "user.js").write_text(user_js(preferences), encoding="utf-8")
        # A release build ignores services.settings.server unless this is set.
        env = dict(os.environ, MOZ_REMOTE_SETTINGS_DEVTOOLS="1")
        self._spawn([self.executable, "--headless", "--no-remote", "--profile", str(self.profile),
                     "--remote-debugging-port", "0", "about:blank"], env=env)
        port = self._wait_for_file(self.profile / "WebDriverBiDiServer.json",
                                   lambda text: int(json.loads(text)["ws_port"]), timeout)
        return f"ws://127.0.0.1:{port}/session"

    def _start_session(self) -> None:
        self.capabilities = self.call("session.new", {"capabilities": {}})["capabilities"]
        self.call("session.subscribe", {"events": ["log.entryAdded"]})

    @property
    def version(self) -> str:
        return f"{self.capabilities.get('browserName')} {self.capabilities.get('browserVersion')}"

    @staticmethod
    def _answer(message: dict[str, Any]) -> tuple[int | None, str | None]:
        if message.get("type") not in ("success", "error") or message.get("id") is None:
            return None, None
        if message["type"] == "error":
            return message["id"], f"{message.get('error')}: {message.get('message', '')}"
        return message["id"], None

    @staticmethod
    def _event_key(message: dict[str, Any]) -> str | None:
        params = message.get("params", {})
        return params.get("context") or params.get("source", {}).get("context")

    def new_tab(self, width: int = 1024, height: int = 768, *, insecure_certs: bool = False) -> FirefoxTab:
        create: dict[str, Any] = {"type": "window"}
        user_context = None
        if insecure_certs:              # a user context of its own: the setting concerns this tab only
            user_context = self.call("browser.createUserContext", {"acceptInsecureCerts": True})["userContext"]
            create["userContext"] = user_context
        context = self.call("browsingContext.create", create)["context"]
        return FirefoxTab(self, context, width, height, user_context)


class FirefoxTab(Page):
    """One top-level browsing context (a window of its own)."""

    browser: Firefox

    def __init__(self, browser: Firefox, context: str, width: int, height: int, user_context: str | None) -> None:
        super().__init__(browser, context, width, height)
        self.user_context = user_context
        self.call("browsingContext.setViewport",
                  {"viewport": {"width": width, "height": height}, "devicePixelRatio": 1})

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        """Send a BiDi command about this tab (its ``context`` is added to ``params``)."""
        return self.browser.call(method, {"context": self.key, **(params or {})}, timeout=timeout)

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method != "log.entryAdded":
            return
        text = params.get("text", "")
        if params.get("type") == "console":
            self.console.append(f"{params.get('method')}: {text}")
        elif SOCKET_FAILURE.match(text):
            # Firefox reports a WebSocket that failed to connect, or whose connection broke,
            # as a script error; Chromium as a console message. Neither is an exception.
            self.console.append(f"error: {text}")
        elif params.get("type") == "javascript":    # an uncaught exception
            frames = params.get("stackTrace", {}).get("callFrames", [])
            self.errors.append(f"{text} (line {frames[0]['lineNumber'] if frames else '?'})")

    def add_init_script(self, source: str) -> None:
        self.browser.call("script.addPreloadScript",
                          {"functionDeclaration": "() => {\n" + source + "\n}", "contexts": [self.key]})

    def navigate(self, url: str, *, timeout: float = WAIT_TIMEOUT) -> None:
        self.url = url
        try:
            self.call("browsingContext.navigate", {"url": url, "wait": "complete"}, timeout=timeout)
        except DriverError as exc:
            raise DriverError(f"navigating to {url} failed: {exc}") from None

    def evaluate(self, expression: str, *, timeout: float = COMMAND_TIMEOUT) -> Any:
        answer = self.browser.call("script.evaluate", {
            "expression": expression, "target": {"context": self.key}, "awaitPromise": True,
            "resultOwnership": "none", "userActivation": True,
        }, timeout=timeout)
        if answer.get("type") == "exception":
            raise JavaScriptError(f"{expression!r} threw: {answer['exceptionDetails'].get('text')}")
        return from_remote_value(answer["result"])

    def _perform(self, source: dict[str, Any]) -> None:
        self.call("input.performActions", {"actions": [source]})

    def _mouse_click(self, x: float, y: float) -> None:
        self._perform({"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": [
            {"type": "pointerMove", "x": round(x), "y": round(y)},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerUp", "button": 0},
        ]})

    def _insert_text(self, text: str) -> None:
        keys = [{"type": kind, "value": char} for char in text for kind in ("keyDown", "keyUp")]
        self._perform({"type": "key", "id": "keyboard", "actions": keys})

    def press(self, key: str = "Enter") -> None:
        self._perform({"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": KEYS[key]}, {"type": "keyUp", "value": KEYS[key]}]})

    def screenshot(self) -> bytes:
        self.call("browsingContext.activate")
        return base64.b64decode(self.call("browsingContext.captureScreenshot")["data"])

    def _close(self) -> None:
        self.browser.call("browsingContext.close", {"context": self.key}, timeout=5)
        if self.user_context is not None:
            self.browser.call("browser.removeUserContext", {"userContext": self.user_context}, timeout=5)

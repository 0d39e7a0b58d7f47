"""What the two browser drivers share: a browser process, one WebSocket to it, and a page interface.

Chromium is driven over the Chrome DevTools Protocol (``tests/cdp.py``),
Firefox over WebDriver BiDi (``tests/bidi.py``). Both protocols are JSON
over one WebSocket, so both drivers use :func:`common.connect`, and both
look alike from the tests' side::

    with cdp.Chromium() as browser:             # or bidi.Firefox()
        tab = browser.new_tab(1024, 768)
        tab.add_init_script("window.__ready = true;")   # runs before the page's own scripts
        tab.navigate("file:///work/main/test1/client.html?host=127.0.0.1&port=5678")
        tab.wait_for("document.querySelectorAll('#messages > *').length >= 3")
        tab.click("#connect")                   # a real mouse click at the element's centre
        png = tab.screenshot()                  # PNG bytes of the viewport
    # the browser is killed and its profile folder deleted here.

This module holds what does not depend on the protocol: starting and killing
the process (its own process group, a fresh temporary profile, stderr kept
in the profile), the event loop in a background thread that the synchronous
tests hand coroutines to, the socket's read loop that matches answers to
commands by ``id`` and hands events to the tab they concern, and the parts of
:class:`Page` that are plain JavaScript (waiting, finding what to click).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

try:
    import common
except ImportError:                     # run from elsewhere than the repository's root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import common

__all__ = ["Browser", "Page", "DriverError", "JavaScriptError", "NetworkTrap", "POLL_INTERVAL"]

START_TIMEOUT = 20.0        # a browser's first start on a loaded 2-core box can be slow
COMMAND_TIMEOUT = 15.0      # one command (a large screenshot included)
WAIT_TIMEOUT = 10.0         # default bound of Page.wait_for and Page.navigate
POLL_INTERVAL = 0.05        # how often Page.wait_for asks again

# A screenshot comes back base64-encoded in one JSON message: a full-HD page
# full of detail is several megabytes, far above connect()'s default 1 MiB.
MAX_MESSAGE_SIZE = 256 * 2**20


class DriverError(Exception):
    """The browser answered a command with an error, never answered, or went away."""


class JavaScriptError(DriverError):
    """An expression given to :meth:`Page.evaluate` threw."""


class Browser(ABC):
    """One browser process and one automation WebSocket to it.

    Subclasses say how to start the browser and find its endpoint
    (:meth:`_launch`), how answers and errors look (:meth:`_answer`), and to
    which tab an event belongs (:meth:`_event_key`). :meth:`close` always kills
    the process group and deletes the profile; it is idempotent.
    """

    name = "browser"                    # "chromium" or "firefox": the tests' ids

    def __init__(self, executable: str, *, start_timeout: float = START_TIMEOUT) -> None:
        self.executable = executable
        self.profile = Path(tempfile.mkdtemp(prefix=f"wslab-{self.name}-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"{self.name}-driver", daemon=True)
        self.ws: common.ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        # (method, tab key, predicate, future): one-shot event waiters.
        self._waiters: list[tuple[str, str | None, Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = []
        # tab key (CDP session, BiDi context) -> callback for every event of that tab.
        self._listeners: dict[str, Callable[[str, dict[str, Any]], None]] = {}
        self._closed = False
        self._stderr_path = self.profile / f"{self.name}-stderr.log"
        try:
            self._stderr = open(self._stderr_path, "wb")
            url = self._launch(start_timeout)
            self.thread.start()
            self.ws = self._run(self._connect(url), start_timeout)
            self._start_session()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------- lifecycle

    @abstractmethod
    def _launch(self, timeout: float) -> str:
        """Start the browser (with :meth:`_spawn`); return its automation WebSocket URL."""

    def _start_session(self) -> None:
        """Whatever the protocol needs once connected (a BiDi session); nothing by default."""

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=env,
            start_new_session=True,     # its own process group: close() kills its children too
        )

    def _wait_for_file(self, path: Path, parse: Callable[[str], Any], timeout: float) -> Any:
        """Wait (bounded) until ``parse(path's text)`` succeeds: the browser writes its port there."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return parse(path.read_text())
            except (OSError, IndexError, ValueError, KeyError):
                pass                    # not there yet, or half-written
            assert self.process is not None
            if self.process.poll() is not None:
                raise DriverError(f"{self.executable} exited with {self.process.returncode} before it listened; "
                                  f"stderr:\n{self.stderr_tail()}")
            if time.monotonic() > deadline:
                raise DriverError(f"{self.executable} wrote no {path.name} within {timeout} s; stderr:\n{self.stderr_tail()}")
            time.sleep(0.05)

    async def _connect(self, url: str) -> common.ClientConnection:
        # No Origin header: both browsers refuse automation connections from web pages.
        ws = await common.connect(url, max_size=MAX_MESSAGE_SIZE, max_queue=256)
        asyncio.get_running_loop().create_task(self._read_loop(ws))
        return ws

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            text = self._stderr_path.read_text(errors="replace")
        except OSError:
            return "(no stderr log)"
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Close the socket, kill the browser (and its children), delete the profile. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.ws is not None and self.thread.is_alive():
            with contextlib.suppress(Exception):
                self._run(self.ws.close(), 5)
        if self.process is not None:
            self._kill_group()
        if hasattr(self, "_stderr"):
            self._stderr.close()
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        if not self.loop.is_running():
            self.loop.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _kill_group(self) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers; no child survives us."""
        assert self.process is not None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)

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

    @staticmethod
    @abstractmethod
    def _answer(message: dict[str, Any]) -> tuple[int | None, str | None]:
        """(id, error text) of an answer; id None for an event."""

    @staticmethod
    @abstractmethod
    def _event_key(message: dict[str, Any]) -> str | None:
        """The key of the tab an event concerns (see ``_listeners``), if any."""

    async def _read_loop(self, ws: common.ClientConnection) -> None:
        """Route every message: answers to their command, events to listeners and waiters."""
        error: BaseException | None = None
        try:
            async for text in ws:
                message = json.loads(text)
                id_, _ = self._answer(message)
                if id_ is not None:
                    future = self._pending.pop(id_, None)
                    if future is not None and not future.done():
                        future.set_result(message)
                    continue
                method, params = message.get("method", ""), message.get("params", {})
                key = self._event_key(message)
                listener = self._listeners.get(key) if key else None
                if listener is not None:
                    listener(method, params)
                for waiter in list(self._waiters):
                    wanted, wanted_key, predicate, future = waiter
                    if wanted == method and wanted_key == key and not future.done() and predicate(params):
                        future.set_result(params)
                        self._waiters.remove(waiter)
        except Exception as exc:        # ConnectionClosedError, bad JSON: fail every waiter
            error = exc
        reason = DriverError(f"the {self.name} connection ended: {error or 'closed'}")
        for future in [*self._pending.values(), *(w[3] for w in self._waiters)]:
            if not future.done():
                future.set_exception(reason)
        self._pending.clear()
        self._waiters.clear()

    async def _send(self, method: str, params: dict[str, Any] | None, extra: dict[str, Any]) -> dict[str, Any]:
        assert self.ws is not None
        command: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}, **extra}
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self._pending[command["id"]] = future
        try:
            await self.ws.send(json.dumps(command))
            answer = await future
        finally:
            self._pending.pop(command["id"], None)
        _, error = self._answer(answer)
        if error is not None:
            raise DriverError(f"{method} failed: {error}")
        return answer.get("result", {})

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = COMMAND_TIMEOUT,
             **extra: Any) -> dict[str, Any]:
        """Send one command and return its ``result``; raise :class:`DriverError` on an error answer."""
        if self._closed:
            raise DriverError(f"{self.name} is closed")
        try:
            return self._run(self._send(method, params, extra), timeout)
        except TimeoutError:
            raise DriverError(f"{method}: no answer within {timeout} s") from None

    def expect(self, method: str, key: str | None = None,
               predicate: Callable[[dict[str, Any]], bool] = lambda params: True) -> Future[dict[str, Any]]:
        """Start waiting for an event of the tab ``key`` *before* the command that causes it;
        ``.result(timeout)`` waits."""
        async def register() -> asyncio.Future[dict[str, Any]]:
            future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
            self._waiters.append((method, key, predicate, future))
            return future

        inner = self._run(register(), COMMAND_TIMEOUT)

        async def wait() -> dict[str, Any]:
            try:
                return await inner
            finally:                    # cancelled or timed out: forget the waiter
                self._waiters[:] = [w for w in self._waiters if w[3] is not inner]

        return asyncio.run_coroutine_threadsafe(wait(), self.loop)

    # ------------------------------------------------------------------ tabs

    @abstractmethod
    def new_tab(self, width: int = 1024, height: int = 768, *, insecure_certs: bool = False) -> Page:
        """Open a blank tab of ``width`` x ``height`` CSS pixels (device scale 1), in front.

        ``insecure_certs=True``: this tab (and only this one) accepts any TLS
        certificate, as the tests' self-signed one.
        """


class Page(ABC):
    """One tab. Made by :meth:`Browser.new_tab`; the engine-specific part is abstract."""

    def __init__(self, browser: Browser, key: str, width: int, height: int) -> None:
        self.browser = browser
        self.key = key
        self.width, self.height = width, height
        self.url = "about:blank"            # the last URL given to navigate()
        self.closed = False
        self.errors: list[str] = []         # uncaught exceptions in the page
        self.console: list[str] = []        # console.* calls, "level: text"
        browser._listeners[key] = self._on_event

    @abstractmethod
    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        """Record the tab's uncaught exceptions and console calls."""

    @abstractmethod
    def add_init_script(self, source: str) -> None:
        """Run ``source`` in every document this tab loads from now on, before the page's own scripts."""

    @abstractmethod
    def navigate(self, url: str, *, timeout: float = WAIT_TIMEOUT) -> None:
        """Load ``url`` (``file://``, ``http://``, ``data:``) and wait for its load event."""

    @abstractmethod
    def evaluate(self, expression: str, *, timeout: float = COMMAND_TIMEOUT) -> Any:
        """Evaluate JavaScript in the page (with a user gesture); return its value as JSON would
        (promises are awaited); raise :class:`JavaScriptError` if it throws."""

    @abstractmethod
    def _mouse_click(self, x: float, y: float) -> None:
        """Move the mouse to (x, y) of the viewport, press and release the left button."""

    @abstractmethod
    def _insert_text(self, text: str) -> None:
        """Type ``text`` into the focused element, replacing its selection."""

    @abstractmethod
    def press(self, key: str = "Enter") -> None:
        """Press and release a key (Enter, Tab or Escape) in the focused element."""

    @abstractmethod
    def screenshot(self) -> bytes:
        """Bring the tab to the front and capture its viewport as PNG bytes (``width`` x ``height``)."""

    @abstractmethod
    def _close(self) -> None:
        """Close the tab in the browser."""

    def close(self) -> None:
        """Close the tab (its WebSockets close with it). Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.browser._listeners.pop(self.key, None)
        with contextlib.suppress(DriverError):
            self._close()

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
            const x = Math.round(r.left + r.width / 2), y = Math.round(r.top + r.height / 2);
            const hit = document.elementFromPoint(x, y);
            if (!hit || !(hit === el || el.contains(hit))) return "covered by " + (hit ? hit.outerHTML.slice(0, 80) : "nothing");
            return [x, y];
        }})()""")
        if not isinstance(box, list):
            raise DriverError(f"cannot click {selector}: {box}")
        self._mouse_click(*box)

    def type(self, selector: str, text: str) -> None:
        """Focus the input ``selector``, select its text, and type ``text`` over it (input events fire as for a person)."""
        found = self.evaluate(f"""(() => {{
            const el = document.querySelector({json.dumps(selector)});
            if (!el) return false;
            el.focus(); el.select && el.select();
            return document.activeElement === el;
        }})()""")
        if not found:
            raise DriverError(f"cannot type into {selector}: missing or not focusable")
        self._insert_text(text)

    def text(self, selector: str) -> str | None:
        """The ``textContent`` of ``selector`` (None if missing)."""
        return self.evaluate(f"document.querySelector({json.dumps(selector)})?.textContent ?? null")


class NetworkTrap:
    """A loopback listener used as a browser's proxy: it records the first line of each
    request (``CONNECT host:443 HTTP/1.1``, ``GET http://...``) and answers nothing."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[str] = []
        self.thread = threading.Thread(target=self._accept, name="network-trap", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:             # closed: the session is over
                return
            with connection:
                connection.settimeout(2)
                try:
                    first = connection.recv(1024).split(b"\r\n", 1)[0]
                except OSError:
                    first = b"(nothing)"
                self.requests.append(first.decode("latin-1"))

    def __enter__(self) -> NetworkTrap:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)    # wakes the accept() above, on Linux
        self.listener.close()
        self.thread.join(5)

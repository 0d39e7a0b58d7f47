"""Fixtures shared by the tests: the browser tests' (a browser of each engine, its tabs, a web
site of another origin), then, at the end, the echo server as a subprocess (``echo_server``).

``browser`` is parametrized by engine, so every test that uses it (or
``open_tab``) runs once in Chromium and once in Firefox, and its id says
which: ``test_x[chromium-test1]``. A missing browser skips its engine's tests
with one line that says how to install it; with ``CI=true`` it fails them.
``-k chromium`` or ``-k firefox`` runs one engine.

``echo_server`` is ``python3 -m common echo`` on a free port, one per test
module that asks for it. Plain helpers (running a scenario, the in-process
echo server) are in helpers.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import serve_page

try:                                    # tests/ as a package or as a plain directory
    from . import bidi, cdp
    from .driver import Browser, NetworkTrap, Page
except ImportError:
    import bidi
    import cdp
    from driver import Browser, NetworkTrap, Page

VIEWPORT = (1024, 1280)                 # CSS pixels at device scale 1: the screenshots' size

# Counts kept by the test, not by the page: how many children were ever added
# to #messages (the page keeps only the newest ones) and when, and how many
# times #response was written (a reply can repeat the previous one's text).
# Installed before the page's own script runs.
COUNTERS = """
window.__lab = { messages: 0, responses: 0, arrivals: [], repliedAt: 0 };
const now = () => performance.timeOrigin + performance.now();   // ms, comparable between tabs
document.addEventListener("DOMContentLoaded", () => {
  const list = document.getElementById("messages");
  if (list) {
    __lab.messages = list.children.length;
    new MutationObserver((records) => {
      for (const r of records) for (const n of r.addedNodes) if (n.nodeType === 1) {
        __lab.messages++;
        __lab.arrivals.push(now());                    // when it showed up
        if (__lab.arrivals.length > 1000) __lab.arrivals.splice(0, 500);
      }
    }).observe(list, { childList: true });
  }
  const response = document.getElementById("response");
  if (response) {
    new MutationObserver((records) => { __lab.responses += records.length; __lab.repliedAt = now(); })
      .observe(response, { childList: true, characterData: true, subtree: true });
  }
});
"""

# Records every WebSocket the page makes (attempts included), and, once open, the
# subprotocol and extensions the browser agreed on. Installed before the page's script runs.
SOCKETS = """
window.__sockets = [];
window.WebSocket = new Proxy(WebSocket, { construct(target, args) {
  const ws = new target(...args), record = { url: ws.url, protocol: null, extensions: null };
  __sockets.push(record);
  ws.addEventListener("open", () => { record.protocol = ws.protocol; record.extensions = ws.extensions; });
  return ws;
} });
"""

# Counts the page's visibilitychange listeners on document as the DOM keeps them: one per
# (function, capture) pair, added twice still one, removed with the same pair.
VISIBILITY_LISTENERS = """
const listening = new Map();
const capture = (options) => typeof options === "boolean" ? options : !!(options && options.capture);
const add = document.addEventListener, remove = document.removeEventListener;
document.addEventListener = function (type, listener, options) {
  if (type === "visibilitychange" && listener) {
    if (!listening.has(listener)) listening.set(listener, new Set());
    listening.get(listener).add(capture(options));
  }
  return add.call(this, type, listener, options);
};
document.removeEventListener = function (type, listener, options) {
  if (type === "visibilitychange" && listening.has(listener)) {
    listening.get(listener).delete(capture(options));
    if (!listening.get(listener).size) listening.delete(listener);
  }
  return remove.call(this, type, listener, options);
};
window.__visibilityListeners = () => [...listening.values()].reduce((n, flags) => n + flags.size, 0);
"""


# ------------------------------------------------------------------ fixtures

# Each engine: its driver, how to find its executable, the environment variable that names one.
ENGINES = {
    "chromium": (cdp.Chromium, cdp.find_chromium, "CHROMIUM", cdp.INSTALL_HINT),
    "firefox": (bidi.Firefox, bidi.find_firefox, "FIREFOX", bidi.INSTALL_HINT),
}


# Why an engine's tests are skipped (its browser is missing): engine -> reason.
MISSING: dict[str, str] = {}


def executable_of(engine: str) -> str:
    """The engine's executable; skip the test if there is none (fail it with ``CI=true``)."""
    _, find, variable, hint = ENGINES[engine]
    executable = find()
    if executable is None:
        wanted = os.environ.get(variable)
        reason = f"{engine} not found: {hint}" + (f" ({variable}={wanted} is not an executable)" if wanted else "")
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires the browser tests to run", pytrace=False)
        MISSING[engine] = reason
        pytest.skip(reason)
    return executable


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the browser tests last, after pytest has grouped them by engine.

    The browsers live for the whole session, with driver threads that keep
    receiving their events; tests that measure the process's memory with
    tracemalloc (which counts every thread's allocations) must not run beside
    them.
    """
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Give every skip for a missing browser the same location, so that ``-ra`` sums up each
    missing engine in one line ("SKIPPED [77] tests/conftest.py:N: firefox not found: ...")
    instead of one line per test."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and isinstance(report.longrepr, tuple):
        for engine, reason in MISSING.items():
            if reason in report.longrepr[2]:
                report.longrepr = (__file__, executable_of.__code__.co_firstlineno, reason)


@pytest.fixture(scope="session")
def firefox_executable() -> str:
    """Firefox's executable, for a test that starts a Firefox of its own."""
    return executable_of("firefox")


@pytest.fixture(scope="session", params=list(ENGINES))
def browser(request: pytest.FixtureRequest) -> Iterator[Browser]:
    """One headless browser of each engine for the whole session; skipped (or failed on CI) if missing.

    Firefox's proxy is a loopback listener that records every request sent to
    it: at the end of the session, any request Firefox made of its own (an
    update, telemetry, a connectivity check) fails the run.
    """
    driver = ENGINES[request.param][0]
    executable = executable_of(request.param)
    if driver is not bidi.Firefox:
        with driver(executable) as browser:
            yield browser
        return
    with NetworkTrap() as trap:
        with bidi.Firefox(executable, proxy_port=trap.port) as browser:
            yield browser
    assert not trap.requests, f"Firefox sent requests of its own (to the test proxy): {trap.requests}"


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Open tabs on demand (``open_tab(url)``); all are closed after the test.

    ``open_tab(url, record_sockets=True)`` records every socket the page makes
    in ``__sockets`` (see SOCKETS); ``insecure_certs=True`` makes that tab alone
    accept the fixture's self-signed certificate; ``count_listeners=True``
    counts its visibilitychange listeners (``__visibilityListeners()``).
    A test fails if a page threw an uncaught JavaScript exception.
    """
    tabs: list[Page] = []

    def open_(url: str, *, record_sockets: bool = False, insecure_certs: bool = False,
              count_listeners: bool = False) -> Page:
        tab = browser.new_tab(*VIEWPORT, insecure_certs=insecure_certs)
        tabs.append(tab)
        tab.add_init_script(COUNTERS)
        if record_sockets:
            tab.add_init_script(SOCKETS)
        if count_listeners:
            tab.add_init_script(VISIBILITY_LISTENERS)
        tab.navigate(url)
        return tab

    yield open_
    errors = [f"{tab.url}: {error}" for tab in tabs for error in tab.errors]
    for tab in tabs:
        tab.close()
    assert not errors, f"uncaught JavaScript exceptions in the page: {errors}"


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder where each browser test leaves its screenshots (test_browser*.py)."""
    folder = tmp_path_factory.mktemp("screenshots")
    print(f"\nbrowser screenshots go to {folder}")
    return folder


@pytest.fixture
def web_site() -> Iterator[Callable[[str], str]]:
    """Serve pages on demand: ``web_site(html)`` serves ``html`` at http://127.0.0.1:PORT/ (another
    origin than any stage's, and a secure context, as every loopback origin) and returns that URL.
    Every such server is shut down after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda page: stack.enter_context(serve_page(page))


# ============================================================ the echo server
# For the tests of ``python3 -m common echo`` over raw sockets (conformance,
# permessage-deflate). Helpers without a teardown are in helpers.py.


try:                                    # tests/ as a package or as a plain directory
    from . import rawws
except ImportError:
    import rawws

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def echo_server() -> Iterator[rawws.EchoServer]:
    """``python3 -m common echo`` with its default options (or WSLAB_ECHO_CMD, see rawws.EchoServer),
    started once for each module that uses it, always killed at the module's end."""
    with rawws.EchoServer(REPO) as server:
        yield server

"""Browser tests: every stage used as a person would, in headless Chromium and in headless Firefox.

Each test runs once per engine (its id says which: ``[chromium-...]``,
``[firefox-...]``). It starts the stage's server on a free port
(``running_stage``, at ``--speed 20``), opens the stage's page in the browser
(Chromium driven over the DevTools Protocol by ``tests/cdp.py``, Firefox over
WebDriver BiDi by ``tests/bidi.py``, both with our own ``common.connect``),
does what ``seed.md`` tells a person to do (type, click) and checks what that
person would see, through the pages' DOM contract:

* every page: ``#messages`` (one child per message, newest last) and
  ``#status`` whose ``data-state`` is ``connecting``, ``open`` or ``closed``;
  ``?host=&port=`` in the URL choose the server;
* test1 and test2: one socket opened on load, no reconnection: the close code
  shows in ``#status``; test3 and later reconnect by themselves (with backoff);
* test2: ``#command``, ``#send``, ``#response``; test3 and later: ``#host``
  and ``#connect``; test3 to test6: ``#command``, ``#send``, ``#response``;
  test6 and later: ``canvas#chart``; test7 and later: ``#start``, ``#stop``
  and ``#legend``; test8 and test9: series A, B and C in ``#legend``;
  test9 is also served by its own server at ``/`` and ``/dashboard``, over
  https:// too (--certfile), connects by itself to the server that served it
  (no Connect pressed), and its sockets negotiate permessage-deflate with
  the browser (``ws.extensions``, recorded as the page's sockets open).

One screenshot per stage is saved in a temporary folder (shown with
``pytest -s``) and checked to be a real render of the viewport's size.

Where the engines differ, the test says so and asserts the same for both
(README's "Two browsers" lists the differences). Without one of the browsers
its tests are skipped, with one line that says how to install it; with
``CI=true`` they fail instead. ``-k chromium`` or ``-k firefox`` runs one engine.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import common

try:                                    # tests/ as a package or as a plain directory
    from . import bidi, png
    from .driver import POLL_INTERVAL, Browser, DriverError, NetworkTrap, Page
    from .stage_util import running_stage
except ImportError:
    import bidi
    import png
    from driver import POLL_INTERVAL, Browser, DriverError, NetworkTrap, Page
    from stage_util import running_stage

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"    # a self-signed certificate for 127.0.0.1: a test fixture
SPEED = 20                              # the servers' clocks run this many times faster
TIMEOUT = 10.0                          # bound of every wait for something a person would see
LATE_LIMIT = 1.0                        # readings in flight at STOP land within this (seconds)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")   # 2026-11-25T17:30:00.123456Z
ASKED_STOP = re.compile(r"asked '?STOP\b")   # the console's line for each STOP handled ("asked STOP" or "asked 'STOP'")
FAILURE_WORDS = re.compile(r"could not|cannot|refused|failed|unreachable|lost|closed|error", re.I)

# A fingerprint of the chart's pixels: [width, height, FNV-1a hash, non-blank pixels].
CANVAS_FINGERPRINT = """(() => {
  const c = document.querySelector("canvas#chart");
  if (!c || !c.width || !c.height) return null;
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let h = 2166136261, painted = 0;
  for (let i = 0; i < d.length; i += 4) {
    h = Math.imul(h ^ d[i], 16777619); h = Math.imul(h ^ d[i + 1], 16777619);
    h = Math.imul(h ^ d[i + 2], 16777619); h = Math.imul(h ^ d[i + 3], 16777619);
    if (d[i + 3]) painted++;
  }
  return [c.width, c.height, h >>> 0, painted];
})()"""

# For each #legend entry: its text and the colour of its swatch (any child
# with a background colour), and whether that colour is drawn in the chart.
LEGEND_IN_CHART = """(() => {
  const c = document.querySelector("canvas#chart");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  const rgb = (css) => (css.match(/\\d+(\\.\\d+)?/g) || []).map(Number);
  return [...document.querySelectorAll("#legend > *")].map((item) => {
    const swatch = [item, ...item.querySelectorAll("*")].map((e) => getComputedStyle(e).backgroundColor)
      .find((bg) => bg && bg !== "transparent" && !/rgba\\(.*,\\s*0\\)$/.test(bg) && bg !== "rgb(255, 255, 255)");
    let pixels = 0;
    if (swatch) {
      const [r, g, b] = rgb(swatch);
      for (let i = 0; i < d.length; i += 4)
        if (d[i + 3] > 200 && Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 24) pixels++;
    }
    return { name: item.textContent.trim(), color: swatch || null, pixels };
  });
})()"""


# ------------------------------------------------------------------- helpers

def page_url(stage: str, port: int, host: str = "127.0.0.1") -> str:
    """The stage's page opened from disk, pointed at host:port."""
    return f"{(ROOT / stage / 'client.html').as_uri()}?host={host}&port={port}"


def live_page_url(stage: str, port: int) -> str:
    """The page as a person opens it while its server runs: test9's from the server itself
    (its sockets accept only the page it served), the others' from disk."""
    return f"http://127.0.0.1:{port}/" if stage == "test9" else page_url(stage, port)


def free_port() -> int:
    """A port on which nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def state(tab: Page) -> str:
    return tab.evaluate("document.querySelector('#status').dataset.state")


def status(tab: Page) -> str:
    return tab.text("#status") or ""


def count(tab: Page) -> int:
    """How many messages were ever added to #messages."""
    return tab.evaluate("__lab.messages")


def messages(tab: Page) -> list[str]:
    """The texts of the messages now in #messages, oldest first."""
    return tab.evaluate("[...document.querySelectorAll('#messages > *')].map((e) => e.textContent)")


def wait_open(tab: Page) -> None:
    tab.wait_for("document.querySelector('#status').dataset.state === 'open'", timeout=TIMEOUT,
                 message=f"#status never became open (it says {status(tab)!r})")


def connect(tab: Page, host: str = "127.0.0.1") -> None:
    """Type the server's address in #host, press Connect, wait for 'open'."""
    tab.type("#host", host)
    tab.click("#connect")
    wait_open(tab)


def wait_count(tab: Page, at_least: int) -> int:
    return tab.wait_for(f"__lab.messages >= {at_least} && __lab.messages", timeout=TIMEOUT,
                        message=f"#messages never reached {at_least} messages")


def send(tab: Page, command: str) -> str:
    """Type ``command`` in #command, press Send, return the reply shown in #response."""
    before = tab.evaluate("__lab.responses")
    tab.type("#command", command)
    tab.click("#send")
    tab.wait_for(f"__lab.responses > {before}", timeout=TIMEOUT, message=f"no reply to {command} in #response")
    return tab.text("#response") or ""


def press(tab: Page, button: str) -> str:
    """Click #start or #stop, return the reply shown in #response."""
    before = tab.evaluate("__lab.responses")
    tab.click(button)
    tab.wait_for(f"__lab.responses > {before}", timeout=TIMEOUT, message=f"no reply to {button} in #response")
    return tab.text("#response") or ""


def fingerprint(tab: Page) -> list[int]:
    value = tab.evaluate(CANVAS_FINGERPRINT)
    assert value, "the page has no canvas#chart with a size"
    return value


def wait_chart_change(tab: Page, old: list[int], message: str) -> None:
    """Wait (bounded) until the chart's pixels differ from the fingerprint ``old``."""
    tab.wait_for(f"(() => {{ const f = {CANVAS_FINGERPRINT}; return f && f[2] !== {old[2]}; }})()",
                 timeout=TIMEOUT, message=message)


def wait_quiet(tabs: list[Page], window: float, *, chart: bool, bound: float = TIMEOUT) -> list[tuple[int, list[int] | None]]:
    """Wait until no tab changes (message count, and chart pixels if ``chart``) for ``window`` seconds.

    This is how "it stopped" is observed: readings that were already on their
    way when the server handled STOP may still land, then nothing more. Fails
    if the pages are still changing after ``bound`` seconds.
    """
    def snapshot() -> list[tuple[int, list[int] | None]]:
        return [(count(t), fingerprint(t) if chart else None) for t in tabs]

    deadline = time.monotonic() + bound
    last, since = snapshot(), time.monotonic()
    while time.monotonic() - since < window:
        if time.monotonic() > deadline:
            raise AssertionError(f"the pages kept changing for {bound} s after STOP: now {last}")
        time.sleep(POLL_INTERVAL)
        now = snapshot()
        if now != last:
            last, since = now, time.monotonic()
    return last


def assert_unchanged(tabs: list[Page], window: float, expected: list[tuple[int, list[int] | None]], *, chart: bool) -> None:
    """Watch the pages for ``window`` seconds: no message may arrive, no chart pixel change."""
    end = time.monotonic() + window
    while True:
        now = [(count(t), fingerprint(t) if chart else None) for t in tabs]
        assert now == expected, f"the pages changed after they had stopped: {expected} -> {now}"
        if time.monotonic() >= end:
            return
        time.sleep(POLL_INTERVAL)


def save_screenshot(tab: Page, folder: Path, name: str) -> Path:
    """Capture the viewport, check it is a real render of the right size, save it."""
    shot = tab.screenshot()
    viewport = (tab.width, tab.height)
    assert png.png_size(shot) == viewport, f"screenshot is {png.png_size(shot)}, the viewport is {viewport}"
    colors = png.png_distinct_colors(shot, enough=64)
    assert colors >= 64, f"the screenshot of {name} looks blank: {colors} distinct colours"
    path = folder / f"{tab.browser.name}-{name}.png"
    path.write_bytes(shot)
    print(f"screenshot of {name} in {tab.browser.name}: {path}")
    return path


# -------------------------------------------------------- the driver itself

def test_driver_socket_carries_multi_megabyte_messages(browser: Browser, open_tab: Callable[[str], Page]) -> None:
    """Our client talks to the browser's own WebSocket server (DevTools, BiDi) both ways, far beyond 1 MiB."""
    tab = open_tab("about:blank")
    echoed = tab.evaluate("'" + "x" * 3_000_000 + "'.length")   # 3 MB sent by us, masked
    assert echoed == 3_000_000
    # A screenshot of random pixels does not compress: several MB come back in one message.
    tab.evaluate(f"""(() => {{
        document.body.style.margin = 0;
        const c = document.body.appendChild(document.createElement("canvas"));
        c.width = {tab.width}; c.height = {tab.height};
        const ctx = c.getContext("2d"), img = ctx.createImageData(c.width, c.height);
        for (let i = 0; i < img.data.length; i += 65536) crypto.getRandomValues(img.data.subarray(i, i + 65536));
        for (let i = 3; i < img.data.length; i += 4) img.data[i] = 255;
        ctx.putImageData(img, 0, 0);
    }})()""")
    shot = tab.screenshot()
    assert len(shot) > 2 * 2**20
    assert png.png_size(shot) == (tab.width, tab.height)
    assert browser.ws is not None and browser.ws.state is common.State.OPEN


def test_firefox_sends_what_is_not_loopback_to_the_test_proxy(firefox_executable: str) -> None:
    """The guard behind the session's "no request of its own" check: Firefox, given the test proxy,
    sends a request for any address but loopback to it (so nothing leaves this machine), and the
    trap records it."""
    with NetworkTrap() as trap, bidi.Firefox(firefox_executable, proxy_port=trap.port) as firefox:
        tab = firefox.new_tab()
        with pytest.raises(DriverError):
            tab.navigate("http://example.invalid/page", timeout=TIMEOUT)    # the proxy never answers
        deadline = time.monotonic() + TIMEOUT
        while not trap.requests:
            assert time.monotonic() < deadline, "the proxy got no request"
            time.sleep(POLL_INTERVAL)
    assert set(trap.requests) == {"GET http://example.invalid/page HTTP/1.1"}     # it retries: several times


def test_png_check_counts_colours_exactly(open_tab: Callable[[str], Page]) -> None:
    """The PNG decoder sees exactly the colours painted: four stripes, four colours."""
    tab = open_tab("data:text/html,<body style='margin:0'>" + "".join(
        f"<div style='height:25vh;background:{c}'></div>" for c in ("%23123456", "%23abcdef", "%23ff0000", "%2300ff7f")))
    shot = tab.screenshot()
    assert png.png_size(shot) == (tab.width, tab.height)
    assert png.png_distinct_colors(shot, enough=1000) == 4


def test_blank_render_is_recognised_as_blank(open_tab: Callable[[str], Page]) -> None:
    """The screenshot check tells a blank page from a real one."""
    tab = open_tab("about:blank")
    shot = tab.screenshot()
    assert png.png_size(shot) == (tab.width, tab.height)
    assert png.png_distinct_colors(shot, enough=64) == 1


# -------------------------------------------------------------------- stages

def test_test1_each_tab_gets_its_own_stream(open_tab, screenshots, tmp_path) -> None:
    """test1: timestamps fill #messages, and two tabs get two different streams."""
    with running_stage("test1", tmp_path=tmp_path, speed=SPEED) as server:
        first, second = open_tab(page_url("test1", server.port)), open_tab(page_url("test1", server.port))
        for tab in (first, second):
            wait_open(tab)
            wait_count(tab, 4)
        a, b = messages(first), messages(second)
        for text in a + b:
            assert TIMESTAMP.match(text), f"not a timestamp: {text!r}"
        assert a[:4] != b[:4], "both tabs show the same stream"
        assert server.output().count("Hello, client") >= 2
        save_screenshot(first, screenshots, "test1")


@pytest.mark.parametrize("stage", ["test2", "test3"])
def test_commands_get_their_replies(stage, open_tab, screenshots, tmp_path) -> None:
    """test2, test3: GET_TIME shows a timestamp, GREET_ME a greeting, anything else an error."""
    with running_stage(stage, tmp_path=tmp_path, speed=SPEED) as server:
        tab = open_tab(page_url(stage, server.port))
        if stage == "test2":
            wait_open(tab)                          # test2 connects on load
        else:
            assert state(tab) != "open", "test3 must wait for Connect"
            connect(tab)
        assert TIMESTAMP.match(send(tab, "GET_TIME"))
        assert "hello" in send(tab, "GREET_ME").lower()
        assert send(tab, "LAUNCH_ROCKET") == "ERROR: Command LAUNCH_ROCKET not found"
        assert tab.evaluate("document.querySelector('#response').classList.contains('error')")
        assert "GREET_ME" in server.output()
        save_screenshot(tab, screenshots, stage)


def log_lines(server) -> list[str] | None:
    """The samples the server logged so far (test5 and later), None if it keeps no log."""
    if server.log_path is None:
        return None
    return server.log_path.read_text(encoding="utf-8").splitlines() if server.log_path.exists() else []


def wait_logged(server, pattern: re.Pattern[str], *, more_than: int) -> None:
    """Wait (bounded) until the server's console matches ``pattern`` more than ``more_than`` times."""
    deadline = time.monotonic() + TIMEOUT
    while len(pattern.findall(server.output())) <= more_than:
        assert time.monotonic() < deadline, f"the server never printed {pattern.pattern} again:\n{server.output()}"
        time.sleep(POLL_INTERVAL)


def start_then_stop(server, tabs: list[Page], starter: Page, stopper: Page, *, buttons: bool, chart: bool) -> None:
    """START in ``starter``: every tab fills. STOP in ``stopper``: every tab stops.

    "Stops" is measured, not assumed: while running, the pages time the
    readings' pace as they arrive; after the STOP reply, once the server's
    console shows it handled STOP, every page must stay unchanged for ten
    readings' time (at least 0.5 s), twice, and in the tab that sent STOP
    nothing may have arrived later than ``LATE_LIMIT`` after the reply (only
    readings already on their way). Where the server logs its samples (test5
    and later), the log must not grow after the server printed STOP, and every
    reading any page shows must be in that log, in order.
    """
    before = [count(t) for t in tabs]
    shown = [fingerprint(t) for t in tabs] if chart else []
    reply = press(starter, "#start") if buttons else send(starter, "START")
    assert not reply.startswith("ERROR"), f"START was refused: {reply!r}"
    for tab, n in zip(tabs, before):
        wait_count(tab, n + 10)
    # The pace of the readings, as the pages saw them arrive (not as the driver's slower polling sees it).
    per_reading = max(tab.evaluate(f"(() => {{ const a = __lab.arrivals.slice(-(__lab.messages - {n} - 1));"
                                   " return (a.at(-1) - a[0]) / (a.length - 1) / 1000; })()")
                      for tab, n in zip(tabs, before))
    if chart:
        for tab, old in zip(tabs, shown):
            wait_chart_change(tab, old, "the chart did not change while readings arrived")
            wait_chart_change(tab, fingerprint(tab), "the chart stopped following the readings")

    stops_handled = len(ASKED_STOP.findall(server.output()))
    reply = press(stopper, "#stop") if buttons else send(stopper, "STOP")
    assert not reply.startswith("ERROR"), f"STOP was refused: {reply!r}"
    replied_at = stopper.evaluate("__lab.repliedAt")
    wait_logged(server, ASKED_STOP, more_than=stops_handled)     # the console logs each command
    logged = log_lines(server)          # STOP waits for a sample in progress: this log is final
    window = max(0.5, 10 * per_reading)
    print(f"{len(tabs)} tab(s): a reading every {per_reading:.3f} s; after STOP, watching {window:.2f} s of silence twice")
    settled = wait_quiet(tabs, window, chart=chart)
    # Readings already on their way may land just after the reply, none much later. Timed in
    # the tab that got the reply: one renderer's clock, whatever the load on the machine.
    late = (stopper.evaluate("__lab.arrivals.at(-1)") - replied_at) / 1000
    assert late < LATE_LIMIT, f"readings kept arriving {late:.2f} s after the STOP reply"
    assert_unchanged(tabs, window, settled, chart=chart)                # and it stays so
    if logged is not None:
        # The server's side: no sample after it logged STOP, and every reading that any tab
        # shows (late ones included) was sampled before, in order: nothing new was sent.
        assert logged, "the server logged no sample while running"
        assert log_lines(server) == logged, "the server kept sampling after it handled STOP"
        for tab in tabs:
            shown = iter(logged)
            missing = [m for m in messages(tab) if m not in shown]   # in order: a subsequence of the log
            assert not missing, f"readings shown but not in the server's log at STOP (or out of order): {missing[:3]}"


@pytest.mark.parametrize("stage", ["test4", "test4b"])
def test_start_fills_and_stop_stops(stage, open_tab, screenshots, tmp_path) -> None:
    """test4, test4b: after Connect, START makes readings arrive; STOP stops them."""
    with running_stage(stage, tmp_path=tmp_path, speed=SPEED) as server:
        tab = open_tab(page_url(stage, server.port))
        connect(tab)
        start_then_stop(server, [tab], tab, tab, buttons=False, chart=False)
        assert re.search(r"^SENSOR,", messages(tab)[-1]), f"not a reading: {messages(tab)[-1]!r}"
        save_screenshot(tab, screenshots, stage)


@pytest.mark.parametrize("stage", ["test5", "test6", "test7", "test8", "test9"])
def test_one_tab_controls_every_tab(stage, open_tab, screenshots, tmp_path) -> None:
    """test5 to test9: START in one tab fills both, STOP in the other stops both (and their charts)."""
    buttons = stage >= "test7"
    chart = stage >= "test6"
    with running_stage(stage, tmp_path=tmp_path, speed=SPEED) as server:
        tabs = [open_tab(live_page_url(stage, server.port)) for _ in range(2)]
        for tab in tabs:
            connect(tab)
        start_then_stop(server, tabs, tabs[0], tabs[1], buttons=buttons, chart=chart)
        if stage >= "test7":
            check_legend(tabs[0], ["A", "B", "C"] if stage >= "test8" else None)
        save_screenshot(tabs[1], screenshots, stage)


def check_legend(tab: Page, names: list[str] | None) -> None:
    """#legend names the series (``names``, if given), and each series is drawn in its colour."""
    legend = tab.evaluate(LEGEND_IN_CHART)
    assert legend, "#legend is empty"
    if names is not None:
        assert [entry["name"] for entry in legend] == names, f"legend: {legend}"
    for entry in legend:
        if entry["color"]:
            assert entry["pixels"] >= 5, f"series {entry['name']} ({entry['color']}) is not drawn in the chart: {legend}"


def test_test9_is_served_by_its_server(open_tab, screenshots, tmp_path) -> None:
    """test9: / and /dashboard serve the page, #host is pre-filled, clicks alone make it work."""
    with running_stage("test9", tmp_path=tmp_path, speed=SPEED) as server:
        base = f"http://127.0.0.1:{server.port}"     # the WebSocket port answers HTTP too
        tabs = [open_tab(base + "/"), open_tab(base + "/dashboard")]
        for tab in tabs:
            assert tab.evaluate("location.protocol") == "http:"
            assert tab.evaluate("document.querySelector('#host').value") == "127.0.0.1"
            wait_open(tab)                         # it connected by itself
            tab.click("#connect")                  # nothing typed: Connect reconnects to the same server
            wait_open(tab)
        start_then_stop(server, tabs, tabs[1], tabs[0], buttons=True, chart=True)
        check_legend(tabs[0], ["A", "B", "C"])
        save_screenshot(tabs[0], screenshots, "test9-served")
    # The page names an inline icon: no request for /favicon.ico, so no 404 in the console.
    assert sorted(line for line in server.output().splitlines() if line.startswith("HTTP ")) == \
        ["HTTP / -> 200", "HTTP /dashboard -> 200"]


# A page of some web site that hides a sandboxed frame: its sockets say "Origin: null", as a page
# opened from disk does. The frame reports each reply, and the close, to the page.
SANDBOXED_FRAME = """<!doctype html><title>some web site</title>
<script>window.__heard = []; addEventListener("message", (event) => __heard.push(event.data));</script>
<iframe sandbox="allow-scripts" srcdoc="<script>
  const ws = new WebSocket('ws://127.0.0.1:%d/commands/');
  ws.onopen = () => ws.send('START');
  ws.onmessage = (event) => parent.postMessage('reply: ' + event.data, '*');
  ws.onclose = (event) => parent.postMessage('closed', '*');
</script>"></iframe>"""


@pytest.mark.parametrize("stage", ["test8", "test9"])
def test_a_sandboxed_frame_of_any_web_site_sends_origin_null(stage, open_tab, web_site, tmp_path) -> None:
    """Origin: null is no proof of a page opened from disk: a web site's sandboxed frame sends it too.

    test1 to test8 accept it, so such a frame can START their acquisition (SECURITY.md says so);
    test9 accepts only the page it served, and refuses the frame with 403.
    """
    with running_stage(stage, tmp_path=tmp_path, speed=SPEED) as server:
        tab = open_tab(web_site(SANDBOXED_FRAME % server.port))
        heard = tab.wait_for("__heard.length && __heard", timeout=TIMEOUT, message="the frame's socket neither answered nor closed")
        if stage == "test8":
            assert heard[0] == "reply: OK: acquisition started"
            server.wait_for_output("asked START")
        else:
            assert heard == ["closed"]
            server.wait_for_output("HTTP request -> 403: ")
            assert not re.search(r"\bSTART\b", server.output()), server.output()


def opened_sockets(tab: Page, at_least: int) -> list[dict]:
    """The page's WebSockets that opened, as the page saw them (url, protocol, extensions);
    needs ``record_sockets=True``. Waits (bounded) until ``at_least`` have opened."""
    return tab.wait_for(f"(() => {{ const open = __sockets.filter((s) => s.extensions !== null);"
                        f" return open.length >= {at_least} && open; }})()",
                        timeout=TIMEOUT, message=f"fewer than {at_least} of the page's WebSockets opened")


def check_readings_flow(tab: Page) -> None:
    """Start: readings arrive (and are drawn); Stop: acknowledged."""
    before, shown = count(tab), fingerprint(tab)
    assert press(tab, "#start") == "OK: acquisition started"
    wait_count(tab, before + 5)
    assert re.fullmatch(r"SENSOR,\d+(,-?\d+\.\d{3}){3}", messages(tab)[-1]), messages(tab)[-1]
    wait_chart_change(tab, shown, "the chart did not change while readings arrived")
    assert press(tab, "#stop") == "OK: acquisition stopped"


def test_test9_connects_by_itself_to_the_server_that_served_it(open_tab, tmp_path) -> None:
    """test9: the served page opens its two sockets to its own server without Connect being pressed."""
    with running_stage("test9", tmp_path=tmp_path, speed=SPEED) as server:
        tab = open_tab(f"http://localhost:{server.port}/dashboard", record_sockets=True)   # a name, not the address typed anywhere
        wait_open(tab)
        sockets = opened_sockets(tab, 2)
        assert sorted(s["url"] for s in sockets) == [f"ws://localhost:{server.port}{path}" for path in ("/commands/", "/stream_data/")]
        assert tab.evaluate("__sockets.length") == 2, f"more sockets than the page's two: {tab.evaluate('__sockets')}"
        assert tab.evaluate("document.querySelector('#host').value") == "localhost"
        assert f"ws://localhost:{server.port}/" in status(tab)
        check_readings_flow(tab)


def test_test9_negotiates_permessage_deflate_with_the_browser(open_tab, tmp_path) -> None:
    """test9: both of the page's sockets get permessage-deflate from the server, and the dashboard works."""
    with running_stage("test9", tmp_path=tmp_path, speed=SPEED) as server:
        tab = open_tab(live_page_url("test9", server.port), record_sockets=True)
        wait_open(tab)                              # it connects by itself
        sockets = opened_sockets(tab, 2)
        assert sorted(s["url"] for s in sockets) == [f"ws://127.0.0.1:{server.port}{path}" for path in ("/commands/", "/stream_data/")]
        for socket_ in sockets:
            assert socket_["extensions"].startswith("permessage-deflate"), f"{socket_['url']}: extensions {socket_['extensions']!r}"
        check_readings_flow(tab)


def test_test9_over_https_and_wss(open_tab, screenshots, tmp_path) -> None:
    """test9 --certfile/--keyfile: the page over https://, its sockets over wss://, the dashboard works.

    The fixture certificate is self-signed: the test's tab alone is told to accept it.
    """
    tls = ["--certfile", str(FIXTURES / "localhost.pem"), "--keyfile", str(FIXTURES / "localhost.key")]
    with running_stage("test9", *tls, tmp_path=tmp_path, speed=SPEED) as server:
        tab = open_tab(server.http_url("/"), record_sockets=True, insecure_certs=True)
        assert tab.evaluate("location.protocol") == "https:"
        wait_open(tab)                          # it connects by itself, over wss:
        assert sorted(s["url"] for s in opened_sockets(tab, 2)) == [server.url("/commands/"), server.url("/stream_data/")]
        assert server.url("/").startswith("wss://") and "wss://" in status(tab)
        check_readings_flow(tab)
        save_screenshot(tab, screenshots, "test9-https")


STAGES = ["test1", "test2", "test3", "test4", "test4b", "test5", "test6", "test7", "test8", "test9"]


@pytest.mark.parametrize("stage", STAGES[:-1])
def test_page_from_disk_talks_wss_when_told(stage, open_tab, tmp_path) -> None:
    """test1 to test8: ?scheme=wss makes the page from disk open wss:// sockets to a --certfile server.

    (test9 accepts only the page it served: its https:// page uses wss:// by itself.)
    """
    tls = ["--certfile", str(FIXTURES / "localhost.pem"), "--keyfile", str(FIXTURES / "localhost.key")]
    with running_stage(stage, *tls, tmp_path=tmp_path, speed=SPEED) as server:
        assert server.scheme == "wss"
        tab = open_tab(page_url(stage, server.port) + "&scheme=wss", insecure_certs=True)
        if stage in ("test1", "test2"):
            wait_open(tab)                  # they connect on load
        else:
            connect(tab)
        assert f"wss://127.0.0.1:{server.port}/" in status(tab), status(tab)


def test_only_the_tab_told_so_accepts_the_self_signed_certificate(open_tab, tmp_path) -> None:
    """insecure_certs=True concerns its own tab: another tab refuses the same wss:// server."""
    tls = ["--certfile", str(FIXTURES / "localhost.pem"), "--keyfile", str(FIXTURES / "localhost.key")]
    with running_stage("test2", *tls, tmp_path=tmp_path, speed=SPEED) as server:
        url = page_url("test2", server.port) + "&scheme=wss"
        trusting = open_tab(url, insecure_certs=True)
        wait_open(trusting)
        other = open_tab(url)
        other.wait_for("document.querySelector('#status').dataset.state === 'closed'", timeout=TIMEOUT,
                       message=f"the tab without insecure_certs did not fail (it says {status(other)!r})")
        assert FAILURE_WORDS.search(status(other)), status(other)
        assert state(trusting) == "open"


@pytest.mark.parametrize("stage", STAGES)
def test_page_shows_that_no_server_answers(stage, open_tab) -> None:
    """Every page: with no server on the port, #status says so instead of hanging or claiming 'open'."""
    tab = open_tab(page_url(stage, free_port()))
    if tab.evaluate("!!document.querySelector('#connect')"):
        tab.type("#host", "127.0.0.1")
        tab.click("#connect")
    tab.wait_for("/could not|cannot|refused|failed|unreachable|lost/i.test(document.querySelector('#status').textContent)",
                 timeout=TIMEOUT, message=f"#status never reported the failure (it says {status(tab)!r})")
    assert state(tab) != "open"
    assert count(tab) == 0


# Show the tab again (a visibilitychange to "visible") when some sockets wait for their next
# attempt, as #status says ("retrying in 2 s"); return [how many waited, how many sockets that
# opened], in one synchronous step, so that no timer fires in between. null while none waits.
SHOW_TAB = """(() => {
  const waiting = (document.querySelector("#status").textContent.match(/retrying in/g) || []).length;
  if (!waiting) return null;
  const before = __sockets.length;
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "visible" });
  document.dispatchEvent(new Event("visibilitychange"));
  return [waiting, __sockets.length - before];
})()"""


def wait_made(tab: Page, at_least: int) -> None:
    """Wait (bounded) until the page has created ``at_least`` WebSockets (attempts included)."""
    tab.wait_for(f"__sockets.length >= {at_least}", timeout=TIMEOUT,
                 message=f"the page never made {at_least} connection attempts")


RECONNECTING = STAGES[2:]                # test3 and later keep their sockets open (keepOpen)


@pytest.mark.parametrize("stage", RECONNECTING)
def test_page_keeps_one_visibility_listener_per_socket(stage, open_tab) -> None:
    """test3 and later: one visibilitychange listener per socket, however many retries and Connect presses.

    The listener retries at once when a hidden tab is shown again; a link's
    stop() (Connect closes the previous links) must take it away with it.
    """
    sockets = 1 if stage == "test3" else 2
    # No server: every attempt fails and is retried.
    tab = open_tab(page_url(stage, free_port()), record_sockets=True, count_listeners=True)
    presses = 2 if tab.evaluate("!!document.querySelector('#connect')") else 0
    if presses:
        tab.type("#host", "127.0.0.1")
        tab.click("#connect")
    wait_made(tab, 2 * sockets + 1)                          # at least one retry
    assert tab.evaluate("__visibilityListeners()") == sockets, "retries added listeners"
    for _ in range(presses):
        made = tab.evaluate("__sockets.length")
        tab.click("#connect")                               # stops the sockets, opens new ones
        wait_made(tab, made + sockets)
        assert tab.evaluate("__visibilityListeners()") == sockets, "Connect left the stopped sockets' listeners behind"
    # The listeners that remain still do their job: a tab shown again retries each waiting socket at once.
    waiting, opened = tab.wait_for(SHOW_TAB, timeout=TIMEOUT, message="no socket ever waited for a retry")
    assert opened == waiting


@pytest.mark.parametrize("stage", ["test1", "test2"])
def test_page_shows_the_close_code_when_the_server_goes_away(stage, open_tab, tmp_path) -> None:
    """test1, test2 (no reconnection): when the server stops, #status says closed, with the close code."""
    with running_stage(stage, tmp_path=tmp_path, speed=SPEED) as server:
        tab = open_tab(page_url(stage, server.port))
        wait_open(tab)
        server.stop()
        tab.wait_for("document.querySelector('#status').dataset.state === 'closed'", timeout=TIMEOUT,
                     message=f"#status never said closed after the server stopped (it says {status(tab)!r})")
        assert re.search(r"\bcode 10\d\d\b", status(tab)), status(tab)


@pytest.mark.parametrize("stage", RECONNECTING)
def test_page_reconnects_after_the_server_restarts(stage, open_tab, tmp_path) -> None:
    """test3 and later: the server stops, #status says so and that it retries; the server restarts
    on the same port, and the page is open again by itself (no Connect pressed) and works."""
    with running_stage(stage, tmp_path=tmp_path, speed=SPEED) as server:
        port = server.port
        tab = open_tab(live_page_url(stage, port))
        if stage != "test9":                    # test9 connects by itself
            connect(tab)
        else:
            wait_open(tab)
        server.stop()
    tab.wait_for("document.querySelector('#status').dataset.state !== 'open'", timeout=TIMEOUT,
                 message="#status still says open after the server stopped")
    assert FAILURE_WORDS.search(status(tab)), status(tab)
    tab.wait_for("/retrying in/.test(document.querySelector('#status').textContent)", timeout=TIMEOUT,
                 message=f"#status never said it would retry (it says {status(tab)!r})")
    with running_stage(stage, "--port", str(port), tmp_path=tmp_path, speed=SPEED) as server:
        assert server.port == port
        wait_open(tab)
        if stage == "test3":
            assert TIMESTAMP.match(send(tab, "GET_TIME"))
        else:
            reply = press(tab, "#start") if stage >= "test7" else send(tab, "START")
            assert not reply.startswith("ERROR"), f"START was refused: {reply!r}"
            wait_count(tab, count(tab) + 3)

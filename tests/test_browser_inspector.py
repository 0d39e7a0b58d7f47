"""The inspector's view in the browsers: what a learner sees while a stage's page goes through it.

Each test runs once per engine (Chromium over CDP, Firefox over WebDriver
BiDi, see test_browser.py). ``python3 -m common inspect`` runs as a command
between a stage's server and its page (the page is pointed at the relay's
port, as README says); the view is opened from the inspector itself. What is
checked is what the page shows, through its DOM contract (common/inspector.html):

* ``#feed-state`` says ``live`` once the feed is open;
* ``#connections tbody tr[data-id]``: one row per relayed connection;
* ``#handshake`` and ``#accept``: the chosen connection's handshake and the
  Sec-WebSocket-Accept check;
* ``#frames tbody tr.frame[data-n][data-from]``, with cells ``.fin``,
  ``.rsv1``, ``.opcode``, ``.mask``, ``.length``, ``.payload``; a click on a
  row opens ``tr.explanation[data-n]``, explain's reading of that frame.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path


try:                                    # tests/ as a package or as a plain directory
    from .stage_util import running_stage
    from .test_browser import TIMESTAMP, page_url, press, save_screenshot, send, wait_count, wait_open
except ImportError:
    from stage_util import running_stage
    from test_browser import TIMESTAMP, page_url, press, save_screenshot, send, wait_count, wait_open

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0


class Inspector:
    """``python3 -m common inspect`` as a subprocess: its relay and view ports, its output."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(TIMEOUT):
            raise AssertionError(f"the inspector did not start: {self.lines}")
        relay = re.search(r"relaying ws://127\.0\.0\.1:(\d+)/", self.output())
        view = re.search(r"open http://localhost:(\d+)/", self.output())
        assert relay and view, self.output()
        self.relay_port, self.view_port = int(relay[1]), int(view[1])
        self.view_url = f"http://127.0.0.1:{self.view_port}/"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("the view: "):
                self._ready.set()
        self._ready.set()

    def output(self) -> str:
        return "".join(self.lines)


@contextlib.contextmanager
def inspecting(port: int) -> Iterator[Inspector]:
    """The inspector in front of ws://127.0.0.1:``port``, on free ports; stopped with SIGTERM after."""
    proc = subprocess.Popen([sys.executable, "-m", "common", "inspect", f"ws://127.0.0.1:{port}", "--port", "0",
                             "--view-port", "0"], cwd=ROOT, env=dict(os.environ, PYTHONIOENCODING="utf-8"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        inspector = Inspector(proc)
        yield inspector
    finally:
        proc.terminate()
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(inspector.lines) if "inspector" in locals() else proc.returncode
    assert "Traceback" not in inspector.output(), inspector.output()


def open_view(open_tab, inspector: Inspector):
    view = open_tab(inspector.view_url)
    view.wait_for("document.querySelector('#feed-state').textContent.trim() === 'live'", timeout=TIMEOUT,
                  message="the view's feed never became live")
    return view


FRAME_ROW = "document.querySelector('#frames tbody tr.frame[data-from=\"{side}\"]')"


def frame_cells(view, selector: str) -> dict[str, str]:
    """The text of each named cell of the frame row that ``selector`` finds."""
    return view.evaluate(f"""(() => {{ const row = {selector};
      const cell = (name) => (row.querySelector('.' + name) || {{textContent: ''}}).textContent.trim();
      return {{fin: cell('fin'), rsv1: cell('rsv1'), opcode: cell('opcode'), mask: cell('mask'),
              length: cell('length'), payload: cell('payload'), sizes: cell('sizes'), n: row.dataset.n}}; }})()""")


def wait_frame(view, side: str, payload: str) -> str:
    """Wait until a frame from ``side`` whose payload cell shows ``payload`` is listed; its selector."""
    selector = (f"[...document.querySelectorAll('#frames tbody tr.frame[data-from=\"{side}\"]')]"
                f".find((row) => (row.querySelector('.payload') || {{}}).textContent?.includes({payload!r}))")
    view.wait_for(f"!!({selector})", timeout=TIMEOUT, message=f"no frame from the {side} showing {payload!r}")
    return selector


def select_connection(view, id: str) -> None:
    """Click a connection's row, as a person would while frames pass, and see it selected.

    Its counts change with every frame: the page updates the row in place, so
    that a click pressed on it is not lost to a row replaced under the pointer.
    """
    row = f"#connections tbody tr[data-id=\"{id}\"]"
    view.click(row)
    view.wait_for(f"document.querySelector('{row}.selected') !== null", timeout=TIMEOUT,
                  message=f"a click on connection {id} did not select it")


def test_the_view_shows_test2_s_masked_request_and_unmasked_answer(open_tab, screenshots, tmp_path) -> None:
    """test2's page through the inspector: the connection, its handshake, GET_TIME masked, the answer not."""
    with running_stage("test2", tmp_path=tmp_path) as server, inspecting(server.port) as inspector:
        view = open_view(open_tab, inspector)
        page = open_tab(page_url("test2", inspector.relay_port))
        wait_open(page)
        answer = send(page, "GET_TIME")
        assert TIMESTAMP.match(answer), answer
        view.wait_for("document.querySelectorAll('#connections tbody tr[data-id]').length >= 1", timeout=TIMEOUT,
                      message="the view lists no connection")
        view.wait_for("(document.querySelector('#accept') || {}).textContent?.startsWith('matches')",
                      timeout=TIMEOUT, message="no Sec-WebSocket-Accept check in the view")
        handshake = view.text("#handshake") or ""
        assert "GET / HTTP/1.1" in handshake and "HTTP/1.1 101 Switching Protocols" in handshake

        request = frame_cells(view, wait_frame(view, "client", "GET_TIME"))
        assert request["fin"].startswith("1"), request
        assert "text" in request["opcode"], request
        assert re.search(r"([0-9a-f]{2} ){3}[0-9a-f]{2}", request["mask"]), request   # the masking key
        # Both browsers offer permessage-deflate and test2 accepts it: the 8 bytes went compressed (RSV1).
        assert request["rsv1"].startswith("1") and "(7-bit)" in request["length"], request
        assert re.search(r"\b8\b", request["sizes"]), request                          # inflated to 8 bytes
        reply = frame_cells(view, wait_frame(view, "server", answer[:19]))
        assert not re.search(r"([0-9a-f]{2} ){3}[0-9a-f]{2}", reply["mask"]), reply      # servers never mask
        assert "text" in reply["opcode"], reply

        # A click opens explain's reading of the frame, field by field.
        n = request["n"]
        view.click(f"#frames tbody tr.frame[data-n=\"{n}\"]")
        explained = view.wait_for(f"(() => {{ const pre = document.querySelector('#frames tr.explanation[data-n=\"{n}\"] pre');"
                                  " return pre && pre.textContent.includes('byte 0') && pre.textContent; })()",
                                  timeout=TIMEOUT, message="the frame did not open into its explanation")
        assert "masking key" in explained and "'GET_TIME'" in explained
        save_screenshot(view, screenshots, "inspector-test2")


def test_test9_s_dashboard_works_through_the_inspector(open_tab, screenshots, tmp_path) -> None:
    """test9 served through the relay: the page loads, connects back through it, and Start and Stop work."""
    with running_stage("test9", tmp_path=tmp_path) as server, inspecting(server.port) as inspector:
        view = open_view(open_tab, inspector)
        page = open_tab(f"http://127.0.0.1:{inspector.relay_port}/")
        wait_open(page)
        assert press(page, "#start") == "OK: acquisition started"
        wait_count(page, 3)
        assert press(page, "#stop") == "OK: acquisition stopped"
        rows = view.evaluate("[...document.querySelectorAll('#connections tbody tr[data-id]')]"
                             ".map((row) => [row.dataset.id, row.textContent])")
        ids = {path: next((id for id, text in rows if path in text), None) for path in ("/commands/", "/stream_data/")}
        assert all(ids.values()), rows
        assert any("HTTP" in text and "/stream_data/" not in text and "/commands/" not in text for _, text in rows), \
            rows                                         # the page itself came through as plain HTTP
        select_connection(view, ids["/commands/"])
        wait_frame(view, "client", "START")
        wait_frame(view, "server", "OK: acquisition started")
        select_connection(view, ids["/stream_data/"])
        wait_frame(view, "server", "SENSOR,")
        save_screenshot(view, screenshots, "inspector-test9")


# A page of another web site: a sandboxed frame (its Origin is "null") and the page itself both try
# the view's feed; each reports what happened.
FOREIGN_PAGE = """<!doctype html><title>some web site</title>
<script>
  window.__heard = [];
  addEventListener("message", (event) => __heard.push("frame: " + event.data));
  const ws = new WebSocket("ws://127.0.0.1:%(port)d/feed");
  ws.onopen = () => __heard.push("page: open");
  ws.onclose = () => __heard.push("page: closed");
</script>
<iframe sandbox="allow-scripts" srcdoc="<script>
  const ws = new WebSocket('ws://127.0.0.1:%(port)d/feed');
  ws.onopen = () => parent.postMessage('open', '*');
  ws.onclose = () => parent.postMessage('closed', '*');
</script>"></iframe>"""


def test_another_site_and_its_sandboxed_frame_cannot_read_the_feed(open_tab, web_site, tmp_path) -> None:
    """The view's feed refuses a web site's page and its sandboxed frame (Origin null): 403, never open."""
    with running_stage("test2", tmp_path=tmp_path) as server, inspecting(server.port) as inspector:
        tab = open_tab(web_site(FOREIGN_PAGE % {"port": inspector.view_port}))
        heard = tab.wait_for("__heard.length >= 2 && __heard", timeout=TIMEOUT,
                             message="the sockets neither opened nor closed")
        assert sorted(heard) == ["frame: closed", "page: closed"], heard
        # The view's own page still gets it.
        open_view(open_tab, inspector)

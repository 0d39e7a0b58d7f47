"""Mixed content, as SECURITY.md describes it: what a page loaded over https:// may open.

Each test runs in Chromium and in Firefox (the ``browser`` fixture of
conftest.py). The page is served over https:// from 127.0.0.1 with the
fixture certificate (tests/fixtures/localhost.pem; its tab alone accepts it):

* ``ws://`` to another host is refused in the constructor: ``new WebSocket``
  throws ``SecurityError`` and nothing is sent (``lab.invalid`` can never
  resolve, and the browsers' proxy is a dead loopback port anyway);
* ``ws://127.0.0.1`` and ``ws://localhost`` are this machine, "potentially
  trustworthy": the same page opens them.

Local Network Access (Chromium asking the user before a web site reaches
this machine or a private address) does not show here: the page is on
127.0.0.1 itself, so it is never asked about.
"""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest
from helpers import serve_page

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# The page's helper: how `new WebSocket(url)` ends, as a string.
PROBE = """<!doctype html><meta charset="utf-8"><title>mixed content</title><script>
window.probe = (url) => new Promise((resolve) => {
  let ws;
  try { ws = new WebSocket(url); } catch (e) { resolve("thrown " + e.name); return; }
  ws.onopen = () => { ws.close(); resolve("open"); };
  ws.onclose = (e) => resolve("closed " + e.code);
});
</script>"""


def https_site(page: str) -> contextlib.AbstractContextManager[str]:
    """Serve ``page`` at https://127.0.0.1:PORT/ with the fixture certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(FIXTURES / "localhost.pem", FIXTURES / "localhost.key")
    return serve_page(page, context)


@pytest.fixture
def https_page(open_tab):
    """A tab showing the PROBE page, loaded over https:// from 127.0.0.1."""
    with https_site(PROBE) as url:
        tab = open_tab(url, insecure_certs=True)
        assert tab.evaluate("location.protocol + ' ' + window.isSecureContext") == "https: true"
        yield tab


def test_an_https_page_cannot_open_ws_to_another_host(https_page) -> None:
    """ws:// to a name other than this machine: SecurityError from the constructor, in both engines."""
    assert https_page.evaluate("probe('ws://lab.invalid:5678/')") == "thrown SecurityError"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_an_https_page_may_open_ws_to_this_machine(host, https_page, echo_server) -> None:
    """ws://127.0.0.1 and ws://localhost are not mixed content: the socket opens."""
    assert https_page.evaluate(f"probe('ws://{host}:{echo_server.port}/')") == "open"

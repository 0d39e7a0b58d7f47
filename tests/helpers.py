"""Plain helpers shared by the tests that run common's server and client in-process.

A scenario is a coroutine run to its end by :func:`run`, in a new event loop,
with a bound on the whole; inside it, :func:`serving` starts ``serve()`` on a
port the system picks and always stops it. Fixtures with a setup and a
teardown of their own (the echo server as a subprocess) are in conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from common import Server, ServerConnection, serve

BOUND = 10      # seconds: the longest any single wait in a scenario may take

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], bound: float = 4 * BOUND) -> T:
    """Run one test scenario in a new event loop; return its result.

    ``bound``: seconds the whole scenario may take, after which it is
    cancelled and the test fails with TimeoutError (a hang fails, never waits forever).
    """
    return asyncio.run(asyncio.wait_for(coro, bound))


async def wait_until(predicate: Callable[[], object], timeout: float = BOUND) -> None:
    """Poll a condition that no event signals, every 10 ms; TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def echo(ws: ServerConnection) -> None:
    """Send every message back as it came: text as text, binary as binary."""
    async for message in ws:
        await ws.send(message)


@contextlib.asynccontextmanager
async def serving(handler: Callable[[ServerConnection], Awaitable[None]] = echo,
                  **options: Any) -> AsyncIterator[Server]:
    """``serve(handler, **options)`` on 127.0.0.1 and a free port; closed on leaving the block.

    The server gets two attributes for the tests: ``port``, and ``url``, the
    root of that port (``ws://127.0.0.1:PORT/``, or ``wss://`` when ``ssl`` is given).
    """
    async with serve(handler, "127.0.0.1", 0, **options) as server:
        server.port = server.sockets[0].getsockname()[1]
        scheme = "wss" if options.get("ssl") else "ws"
        server.url = f"{scheme}://127.0.0.1:{server.port}/"
        yield server


@contextlib.contextmanager
def serve_page(page: str, context: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve ``page`` at http://127.0.0.1:PORT/ (https:// with ``context``) in a thread; yield the URL."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass                        # quiet

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="page-server", daemon=True)
    thread.start()
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

"""test2: request and response. The client asks, the server answers.

Lesson: the same socket carries messages both ways. The handler waits for a
message (`async for command in ws`), then answers it with one message:

    GET_TIME   ->  the current UTC time, e.g. 2026-11-25T17:30:00.123456Z
    GREET_ME   ->  Hello, client!
    anything   ->  ERROR: Command <anything> not found

New since test1: the server no longer talks on its own; it reads what the
client sends and replies (answer()). The console logs each request and its
reply. There is no timer any more, so --speed changes nothing here.

Run:   python3 test2/server.py            (-v shows every frame; Ctrl+C stops)
Open:  test2/client.html in a browser; type GET_TIME or GREET_ME and press Send.
Next:  the page and the server share one machine; test3 puts them apart.
"""

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

# Make "common" importable when run as python3 testN/server.py from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import ServerConnection, runner, serve  # noqa: E402

HOST = "127.0.0.1"      # this machine only
PORT = 5678             # the pages connect to this port unless told otherwise
PAGE = Path(__file__).resolve().with_name("client.html")
# Who may open a socket, by the Origin header that browsers send (RFC 6455 §10.2):
# this stage's page opened from disk (a file:// page sends "Origin: null") and
# scripts or `python3 -m common client` (no Origin header: None). A web site's
# page gets 403, but not a sandboxed frame in it: that sends "null" too (README, Security).
ORIGINS = [None, "null"]
GREETING = "Hello, client!"


def timestamp() -> str:
    """The current UTC time in ISO 8601 with microseconds: 2026-11-25T17:30:00.123456Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def client_name(ws: ServerConnection) -> str:
    """The client's address and port, to tell clients apart in the console."""
    host, port = ws.remote_address[:2]
    return f"{host}:{port}"


def answer(command: str) -> str:
    """The reply to one command."""
    if command == "GET_TIME":
        return timestamp()
    if command == "GREET_ME":
        return GREETING
    return f"ERROR: Command {command} not found"


async def handler(ws: ServerConnection) -> None:
    """Runs once per connection: answer each command until the client leaves."""
    who = client_name(ws)
    print(f"Hello, client {who}", flush=True)
    try:
        async for command in ws:
            reply = answer(command)
            print(f"{who} asked {command!r}; answer: {reply!r}", flush=True)
            await ws.send(reply)
    finally:
        print(f"Bye, client {who}", flush=True)


async def run(host: str, port: int, speed: float) -> None:
    """Serve until Ctrl+C or SIGTERM; leaving `async with` closes every client with 1001."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C raises KeyboardInterrupt
            loop.add_signal_handler(sig, stop.set)
    async with serve(handler, host, port, origins=ORIGINS) as server:
        host, port = server.sockets[0].getsockname()[:2]
        print(f"listening on ws://{host}:{port}/", flush=True)
        page = PAGE.as_uri() + (f"?port={port}" if port != PORT else "")
        print(f"open {page} in a browser; Ctrl+C stops the server", flush=True)
        await stop.wait()
    print("server stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=HOST, help=f"address to listen on (default: {HOST})")
    parser.add_argument("--port", type=runner.port, default=PORT, help="port to listen on (default: %(default)s; 0 picks a free one)")
    parser.add_argument("--speed", type=float, default=1.0, metavar="N",
                        help="run the clock N times faster (used by the tests)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every frame: the wire view")
    args = parser.parse_args(argv)
    if args.speed <= 0:
        parser.error("--speed must be more than 0")
    logging.basicConfig(format="%(asctime)s %(message)s")
    if args.verbose:
        logging.getLogger("common").setLevel(logging.DEBUG)
    try:
        asyncio.run(run(args.host, args.port, args.speed))
    except KeyboardInterrupt:
        pass  # Ctrl+C where the loop cannot catch signals (Windows): the server closed all the same
    except OSError as exc:  # for example: the port is already in use
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""test1: the server talks first. Each client gets its own stream of timestamps.

Lesson: a WebSocket stays open in both directions, so the server can send
whenever it likes, without being asked. Every tab that opens client.html makes
its own connection and gets its own call of handler(): its own stream of UTC
timestamps (2026-11-25T17:30:00.123456Z) at random intervals of 0 to 3 s.

New: everything. The page shows the browser's bare API: new WebSocket(url),
onopen, onmessage, onclose with the close code. The console says "Hello,
client", each timestamp as it is sent (marked ">", as the wire view marks
what the server sends), and "Bye, client".

Run:   python3 test1/server.py    (-v: every frame; --help: all options)
Open:  the file:// address it prints, in as many tabs as you like.
Next:  the page can only listen; in test2 it talks back.
"""

import asyncio
import contextlib
import random
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # "common", from any folder

from common import ServerConnection, runner, serve  # noqa: E402

HOST = "127.0.0.1"      # this machine only
PAGE = Path(__file__).resolve().with_name("client.html")
# Who may connect (Origin, RFC 6455 §10.2): this page from disk ("null"), scripts (None); not quite safe (SECURITY.md).
ORIGINS = [None, "null"]
MAX_DELAY = 3.0         # seconds between two timestamps, at most


def timestamp() -> str:
    """The current UTC time in ISO 8601 with microseconds: 2026-11-25T17:30:00.123456Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def handler(ws: ServerConnection) -> None:
    """Runs once per connection: send timestamps until the client leaves."""
    who = "{}:{}".format(*ws.remote_address[:2])    # the client's address and port
    print(f"Hello, client {who}", flush=True)
    try:
        while True:
            now = timestamp()
            print(f"{who} > {now}", flush=True)      # ">": sent, as in the wire view (-v)
            await ws.send(now)
            with contextlib.suppress(TimeoutError):   # sleep a random while, but wake up if the client leaves
                await asyncio.wait_for(ws.wait_closed(), timeout=runner.scaled(random.uniform(0, MAX_DELAY)))
                break
    finally:
        print(f"Bye, client {who}", flush=True)


async def run(args: runner.Args) -> None:
    """Serve until Ctrl+C or SIGTERM; leaving `async with` closes every client with 1001."""
    async with serve(handler, args.host, args.port, ssl=args.ssl, origins=ORIGINS) as server:
        runner.announce(server, args, PAGE)
        await runner.stopped()


def main(argv: list[str] | None = None) -> int:
    args = runner.parse(runner.options(__doc__, host=HOST), argv)
    return runner.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

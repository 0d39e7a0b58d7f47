"""test3: the same conversation as test2, across the network.

Lesson: devices and networks come and go. A WebSocket server is reachable
from other devices only if it listens on their network: 127.0.0.1 (test1,
test2) is this machine alone; 0.0.0.0 means every network interface, so a
phone or a laptop on the same Wi-Fi can connect to ws://<this machine's
address>:5678/. And a link across a network breaks: Wi-Fi drops, a laptop
sleeps, the server restarts. The page reconnects by itself, waiting longer
after each failure (backoff), and at once when its tab becomes visible again.
The commands are test2's: GET_TIME, GREET_ME, anything else is an ERROR.

New since test2: the default --host is 0.0.0.0 (the server prints the
addresses to type on another device). The page no longer assumes localhost:
you type the server's address and press Connect; it reconnects with backoff.
A firewall may still stand between the two devices: allow incoming TCP on
port 5678 if the page cannot connect.

Who else can connect: anyone who can reach the port; nothing asks who they
are (--host 127.0.0.1 keeps them out). Web sites too, through a browser: the
server accepts "Origin: null" because that is what this page sends when it is
opened from disk, but a sandboxed frame (<iframe sandbox="allow-scripts">) in
any web site sends "Origin: null" as well, with the same headers, so a site
open in a browser that lets it reach this server (Firefox ESR 153 does;
Chromium only if the user allows: SECURITY.md) can send it commands, even on
127.0.0.1. Nothing in the handshake tells the two apart. This holds up to
test8; test9 shows the safe way: it serves its page itself and accepts only
that page's origin, never "null".

Run:   python3 test3/server.py    (-v: every frame; --help: all options)
Open:  test3/client.html on another device (copy the file there), type an
       address that the server printed, press Connect, then send GET_TIME.
Next:  one socket, one conversation; test4 opens a second socket for data.
"""

import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # "common", from any folder

from common import Data, ServerConnection, runner, serve  # noqa: E402

HOST = "0.0.0.0"        # every network interface: other devices can connect
PAGE = Path(__file__).resolve().with_name("client.html")
# Who may connect (Origin, RFC 6455 §10.2): this page from disk ("null"), scripts (None); not quite safe (SECURITY.md).
ORIGINS = [None, "null"]
GREETING = "Hello, client!"


def timestamp() -> str:
    """The current UTC time in ISO 8601 with microseconds: 2026-11-25T17:30:00.123456Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def answer(command: Data) -> str:
    """The reply to one command (text; bytes are no command)."""
    if command == "GET_TIME":
        return timestamp()
    if command == "GREET_ME":
        return GREETING
    return f"ERROR: Command {runner.printable(command)} not found"


async def handler(ws: ServerConnection) -> None:
    """Runs once per connection: answer each command until the client leaves."""
    who = "{}:{}".format(*ws.remote_address[:2])    # the client's address and port
    print(f"Hello, client {who}", flush=True)
    try:
        async for command in ws:
            reply = answer(command)
            print(f"{who} asked {runner.printable(command)}; answer: {reply!r}", flush=True)
            await ws.send(reply)
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

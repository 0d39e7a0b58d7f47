"""test2: request and response. The client asks, the server answers.

Lesson: the same socket carries messages both ways. The handler waits for a
message (`async for command in ws`), then answers it with one message:

    GET_TIME   ->  the current UTC time, e.g. 2026-11-25T17:30:00.123456Z
    GREET_ME   ->  Hello, client!
    anything   ->  ERROR: Command <anything> not found

New since test1: the server no longer talks on its own; it reads what the
client sends and replies (answer()), and the console logs each request and
its reply; runner.printable() keeps what a client sent short and readable in
both. No timer any more. The page gets a box to type a command and a Send
button.

Run:   python3 test2/server.py    (-v: every frame; --help: all options)
Open:  the file:// address it prints; type GET_TIME or GREET_ME, press Send.
Next:  the page and the server share one machine; test3 puts them apart.
"""

import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # "common", from any folder

from common import Data, ServerConnection, runner, serve  # noqa: E402

HOST = "127.0.0.1"      # this machine only
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

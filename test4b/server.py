"""test4b: test4 again, but each socket's role comes from its URL path.

Lesson: the URL path is part of the opening handshake, so the server knows
what a socket is for before the first message, and can refuse a wrong one
before it opens: the command socket connects to /commands/, the data socket
to /stream_data/, and any other path is answered with HTTP 404 instead of the
101 that opens a WebSocket. No first message to send, check or forget.

    ws://HOST:5678/commands/     START -> OK: acquisition started
                                 STOP  -> OK: acquisition stopped
                                 other -> ERROR: Command <other> not found
    ws://HOST:5678/stream_data/  SENSOR,<value> about every 0.1 s while on

New since test4: only_known_paths(), given to serve() as process_request,
answers 404 for other paths; handler() picks commands() or stream_data() by
ws.path. No more "COMMS"/"DATA" message and no 1008 close: the page opens
each socket on its own path. Every later stage keeps these two paths.

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

Run:   python3 test4b/server.py   (-v: every frame; --help: all options)
Open:  test4b/client.html on another device (or here), type an address that
       the server printed, press Connect, then send START and STOP.
Next:  each data socket reads a sensor of its own; in test5 there is one
       acquisition for everybody, shared by every client.
"""

import asyncio
import functools
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # "common", from any folder

from common import ConnectionClosed, Headers, ServerConnection, runner, serve  # noqa: E402

HOST = "0.0.0.0"        # every network interface: other devices can connect
PAGE = Path(__file__).resolve().with_name("client.html")
# Who may connect (Origin, RFC 6455 §10.2): this page from disk ("null"), scripts (None); not quite safe (SECURITY.md).
ORIGINS = [None, "null"]
SAMPLE_PERIOD = 0.1     # seconds between two readings while the sensor is on
PATHS = ("/commands/", "/stream_data/")   # one path per role


class FakeSensor:
    """A pretend instrument: a slow sine wave plus a little noise, like a real signal."""

    def __init__(self) -> None:
        self.phase = 0.0

    def read(self) -> float:
        self.phase += 0.1
        return 10 * math.sin(self.phase) + random.gauss(0, 0.3)


class Acquisition:
    """The state that every socket of every client shares: is the sensor on?"""

    def __init__(self, period: float) -> None:
        self.period = period            # seconds between two readings
        self.on = asyncio.Event()       # set by START, cleared by STOP

    def switch(self, on: bool) -> None:
        if on:
            self.on.set()
        else:
            self.on.clear()


async def commands(ws: ServerConnection, acquisition: Acquisition, who: str) -> None:
    """The command socket: switch the sensor on and off, one reply per command."""
    async for command in ws:
        if command == "START":
            acquisition.switch(True)
            reply = "OK: acquisition started"
        elif command == "STOP":
            acquisition.switch(False)
            reply = "OK: acquisition stopped"
        else:
            reply = f"ERROR: Command {runner.printable(command)} not found"
        print(f"{who} asked {runner.printable(command)}; answer: {reply!r}", flush=True)
        await ws.send(reply)


async def send_readings(ws: ServerConnection, acquisition: Acquisition) -> None:
    """Read this socket's own sensor every period while it is on; push each reading."""
    sensor = FakeSensor()
    try:
        while True:
            await acquisition.on.wait()     # while off: nothing sampled, nothing sent
            await ws.send(f"SENSOR,{sensor.read():.3f}")
            await asyncio.sleep(acquisition.period)
    except ConnectionClosed:
        pass  # the client left: stream_data() sees it too and ends


async def stream_data(ws: ServerConnection, acquisition: Acquisition) -> None:
    """The data socket: readings go out from a task of their own until the client leaves."""
    sender = asyncio.create_task(send_readings(ws, acquisition))
    try:
        async for _ in ws:
            pass  # a data client has nothing to say, but reading is how we see it leave
    finally:
        sender.cancel()


def only_known_paths(path: str, headers: Headers) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """Before the handshake: answer 404 for a path that is not a socket's; None goes on."""
    if path in PATHS:
        return None
    return 404, [("Content-Type", "text/plain; charset=utf-8")], b"Not found: use /commands/ or /stream_data/\n"


async def handler(ws: ServerConnection, acquisition: Acquisition) -> None:
    """Runs once per connection: the URL path says which job the socket does."""
    who = "{}:{}".format(*ws.remote_address[:2])    # the client's address and port
    print(f"Hello, client {who} on {ws.path}", flush=True)
    try:
        if ws.path == "/commands/":
            await commands(ws, acquisition, who)
        else:
            await stream_data(ws, acquisition)
    finally:
        print(f"Bye, client {who}", flush=True)


async def run(args: runner.Args) -> None:
    """Serve until Ctrl+C or SIGTERM; leaving `async with` closes every client with 1001."""
    acquisition = Acquisition(runner.scaled(SAMPLE_PERIOD))
    async with serve(functools.partial(handler, acquisition=acquisition), args.host, args.port, ssl=args.ssl,
                     origins=ORIGINS, process_request=only_known_paths) as server:
        runner.announce(server, args, PAGE)
        await runner.stopped()


def main(argv: list[str] | None = None) -> int:
    args = runner.parse(runner.options(__doc__, host=HOST), argv)
    return runner.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

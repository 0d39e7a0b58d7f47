"""test4: two sockets per page, one for commands and one for data.

Lesson: a page may open several WebSockets to the same server, each with a
job of its own. This is a mock data-acquisition system: a command socket to
switch a fake sensor on and off, and a data socket on which the server pushes
readings, so that commands and data never wait for each other.

Both sockets connect to the same URL, so each one says what it is for in its
first message: "COMMS" or "DATA". Any other first message gets an ERROR reply
and the socket is closed with 1008 (policy violation). Then:

    command socket:  START -> OK: acquisition started   (the sensor is on)
                     STOP  -> OK: acquisition stopped   (the sensor is off)
                     other -> ERROR: Command <other> not found
    data socket:     SENSOR,<value> about every 0.1 s while the sensor is on,
                     nothing while it is off (nothing is even sampled)

New since test3: the role handshake in handler(), commands() and
stream_data(), the Acquisition switch shared by every socket, FakeSensor (a
noisy sine wave); --speed runs its clock faster. The console logs each
socket's role and each command. The page opens the two sockets, and
reconnects each as test3's did.

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

Run:   python3 test4/server.py    (-v: every frame; --help: all options)
Open:  test4/client.html on another device (or here), type an address that
       the server printed, press Connect, then send START and STOP.
Next:  the role rides in a first message that every socket must send and the
       server must check; test4b moves it into the URL.
"""

import asyncio
import functools
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # "common", from any folder

from common import CloseCode, ConnectionClosed, ServerConnection, runner, serve  # noqa: E402

HOST = "0.0.0.0"        # every network interface: other devices can connect
PAGE = Path(__file__).resolve().with_name("client.html")
# Who may connect (Origin, RFC 6455 §10.2): this page from disk ("null"), scripts (None); not quite safe (SECURITY.md).
ORIGINS = [None, "null"]
SAMPLE_PERIOD = 0.1     # seconds between two readings while the sensor is on


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


async def handler(ws: ServerConnection, acquisition: Acquisition) -> None:
    """Runs once per connection: the first message says which job the socket does."""
    who = "{}:{}".format(*ws.remote_address[:2])    # the client's address and port
    print(f"Hello, client {who}", flush=True)
    try:
        role = await ws.recv()
        if role == "COMMS":
            print(f"{who} is a command socket", flush=True)
            await commands(ws, acquisition, who)
        elif role == "DATA":
            print(f"{who} is a data socket", flush=True)
            await stream_data(ws, acquisition)
        else:
            print(f"{who} sent {runner.printable(role)}, which is no role: refused with 1008", flush=True)
            await ws.send(f"ERROR: unknown role {runner.printable(role)}: the first message must be COMMS or DATA")
            await ws.close(CloseCode.POLICY_VIOLATION, "the first message must be COMMS or DATA")
    finally:
        print(f"Bye, client {who}", flush=True)


async def run(args: runner.Args) -> None:
    """Serve until Ctrl+C or SIGTERM; leaving `async with` closes every client with 1001."""
    acquisition = Acquisition(runner.scaled(SAMPLE_PERIOD))
    async with serve(functools.partial(handler, acquisition=acquisition), args.host, args.port, ssl=args.ssl,
                     origins=ORIGINS) as server:
        runner.announce(server, args, PAGE)
        await runner.stopped()


def main(argv: list[str] | None = None) -> int:
    args = runner.parse(runner.options(__doc__, host=HOST), argv)
    return runner.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

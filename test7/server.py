"""test7: the same server as test6; the page gets Start/Stop buttons and a legend.

Lesson: a user interface is a set of messages. The Start and Stop buttons of
test7/client.html send exactly the "START" and "STOP" text that was typed in
the box before, so the server cannot tell the difference and does not change:
commands on /commands/, SENSOR,<value> broadcast on /stream_data/, every
sample logged and every 4th sent (see test5).

New since test6: nothing in this file but this docstring. The lesson is in
the page: diff -u test6/client.html test7/client.html

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

Run:   python3 test7/server.py    (-v: every frame; --help: all options)
Open:  test7/client.html in two tabs (or on two devices), Connect both, press
       Start and Stop in either one.
Next:  one value per reading and no time stamp; test8 sends three of each.
"""

import asyncio
import functools
import math
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # "common", from any folder

from common import Headers, ServerConnection, broadcast, runner, serve  # noqa: E402

HOST = "0.0.0.0"        # every network interface: other devices can connect
PAGE = Path(__file__).resolve().with_name("client.html")
# Who may connect (Origin, RFC 6455 §10.2): this page from disk ("null"), scripts (None); not quite safe (SECURITY.md).
ORIGINS = [None, "null"]
LOG = Path(__file__).resolve().with_name("log.txt")
SAMPLE_PERIOD = 0.25    # seconds between two samples (4 Hz) while the sensor is on
SEND_EVERY = 4          # clients get every 4th sample; the log gets them all
PATHS = ("/commands/", "/stream_data/")   # one path per role


class FakeSensor:
    """A pretend instrument: a slow sine wave plus a little noise, like a real signal."""

    def __init__(self) -> None:
        self.phase = 0.0

    def read(self) -> float:
        self.phase += 0.1
        return 10 * math.sin(self.phase) + random.gauss(0, 0.3)


class Acquisition:
    """One sensor for everybody, read by a thread of its own, logged, broadcast.

    The event loop calls start(), switch() and shutdown(). The sensor thread
    touches nothing of the loop's: it hands readings over with call_soon_threadsafe().
    """

    def __init__(self, period: float) -> None:
        self.period = period            # seconds between two samples
        self.log: runner.Log | None = None  # one line per sample, written by the sensor thread; start() gives it
        self.count = 0                  # samples taken
        self.on = False                 # START sets it, STOP clears it
        self.quitting = False           # shutdown() sets it
        self.lock = threading.Lock()    # held while sampling: STOP waits for a sample in progress
        self.changed = threading.Event()  # wakes the thread when `on` or `quitting` changes
        self.data_clients: set[ServerConnection] = set()
        self.loop = asyncio.get_running_loop()
        self.thread = threading.Thread(target=self.sample_forever, name="sensor")

    def start(self, log: runner.Log) -> None:
        """Start the sensor thread, which will log every sample to `log`."""
        self.log = log
        self.thread.start()

    def switch(self, on: bool) -> None:
        with self.lock:
            self.on = on
        self.changed.set()

    def shutdown(self) -> None:
        """Stop and join the sensor thread, close the log."""
        with self.lock:
            self.quitting = True
        self.changed.set()
        self.thread.join()
        self.log.close()

    def sample_forever(self) -> None:
        """The sensor thread: one sample per period while on, asleep while off."""
        sensor = FakeSensor()
        due = 0.0                       # time.monotonic() of the next sample
        while True:
            self.changed.clear()        # before reading the state, so that no change is missed
            with self.lock:
                if self.quitting:
                    return
                now = time.monotonic()
                if self.on and now >= due:
                    self.take_sample(sensor)
                    due = due + self.period if due + self.period > now else now + self.period
                timeout = due - now if self.on else None
            self.changed.wait(timeout)  # the clock; START, STOP and shutdown cut it short

    def take_sample(self, sensor: FakeSensor) -> None:
        """In the sensor thread: log every sample, hand every SEND_EVERY-th to the loop."""
        reading = f"SENSOR,{sensor.read():.3f}"
        self.log.write(reading + "\n")   # a full disk stops the server (runner.Log)
        if self.count % SEND_EVERY == 0:
            self.loop.call_soon_threadsafe(broadcast, self.data_clients, reading)
        self.count += 1


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


async def stream_data(ws: ServerConnection, acquisition: Acquisition) -> None:
    """The data socket: receive the broadcast readings until the client leaves."""
    acquisition.data_clients.add(ws)
    try:
        async for _ in ws:
            pass  # a data client has nothing to say, but reading is how we see it leave
    finally:
        acquisition.data_clients.discard(ws)


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
    try:
        async with serve(functools.partial(handler, acquisition=acquisition), args.host, args.port, ssl=args.ssl,
                         origins=ORIGINS, process_request=only_known_paths) as server:
            # Only now that the port is ours: a server that cannot start leaves the log alone (common/runner.py).
            acquisition.start(runner.open_log(args.log))
            runner.announce(server, args, PAGE)
            await runner.stopped()
    finally:
        if acquisition.log is not None:     # it started: say how many samples its log holds
            acquisition.shutdown()          # after the clients were closed: nothing taken is lost
            print(f"logged {acquisition.log.lines} samples to {acquisition.log.name}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = runner.parse(runner.options(__doc__, host=HOST, log=LOG), argv)
    return runner.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

"""test9: the WebSocket server also serves the dashboard over plain HTTP.

Lesson: a WebSocket starts life as an HTTP request (GET with "Upgrade:
websocket"), so the server that answers it can answer ordinary GETs on the
same port too. Before each handshake, serve() asks route() (its
process_request): a (status, headers, body) answer is sent as plain HTTP,
None goes on with the WebSocket handshake. Nothing to copy to other devices
any more: browse to http://<this machine's address>:5678/ and the page
connects by itself to the server that served it (its own location).

    GET /, /dashboard, /dashboard/   -> 200, test9/client.html (read at start-up)
    ws://HOST:5678/commands/         -> the command socket (START, STOP)
    ws://HOST:5678/stream_data/      -> the data socket: SENSOR,<ms>,<a>,<b>,<c>
    any other path                   -> 404, and never the content of a file
    a Host that is not this machine  -> 403, before anything else (see below)

The page is sent with Cache-Control: no-store (always the current one) and
X-Content-Type-Options: nosniff (the browser takes it as the HTML it says it
is). The acquisition is test8's: every sample logged, every 4th broadcast.

Who may talk to it. A socket opens only for the page this server served
(same_origin(): its Origin is http://<the Host it asked for>) and for clients
that send no Origin (scripts, python3 -m common client): another web site's
page, open in some browser on the network, gets 403; "null" is refused. And
every request must name this machine in its Host header (serve(hosts=
local_names(...)): localhost, its name or one of its addresses, or a name
given with --allow-host): this defeats DNS rebinding, where a web site points
its own name at this machine's address to pass the same-origin rule.

New since test8: route() replaces only_known_paths(), run() reads the page
(runner.read_page()); same_origin() instead of ORIGINS, hosts= with
--allow-host; --keepalive (a page left open for days must notice a dead
link: serve()'s pings); the console says which http:// address to open.
The page asks for no address: it takes its own location.

Run:   python3 test9/server.py    (-v: every frame; --help: all options)
Open:  http://localhost:5678/ here, or an address the server printed on
       another device; press Start and Stop.
TLS:   with --certfile (and --keyfile), the page is served on https:// and its
       sockets are wss://; without, readings and commands cross the network in
       clear text. Browsers must trust the certificate (a self-signed one: open
       https://<address>:5678/ once and accept it).
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

from common import Headers, ServerConnection, broadcast, local_names, runner, serve  # noqa: E402

HOST = "0.0.0.0"        # every network interface: other devices can connect
PAGE = Path(__file__).resolve().with_name("client.html")
LOG = Path(__file__).resolve().with_name("log.txt")
SAMPLE_PERIOD = 0.25    # seconds between two samples (4 Hz) while the sensor is on
SEND_EVERY = 4          # clients get every 4th sample; the log gets them all
PATHS = ("/commands/", "/stream_data/")   # one path per role
PAGE_PATHS = ("/", "/dashboard", "/dashboard/")  # where the dashboard is served
PAGE_HEADERS = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff")]
TEXT_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff")]


class FakeSensor:
    """A pretend 3-axis accelerometer (m/s²): A and B wobble slowly, C holds gravity."""

    def __init__(self) -> None:
        self.phase = 0.0

    def read(self) -> tuple[float, float, float]:
        self.phase += 0.1
        return (2 * math.sin(self.phase) + random.gauss(0, 0.1),
                2 * math.cos(self.phase) + random.gauss(0, 0.1),
                9.81 + random.gauss(0, 0.05))


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
        ms = time.time_ns() // 1_000_000  # when it was measured, in Unix-epoch milliseconds
        reading = f"SENSOR,{ms}," + ",".join(f"{value:.3f}" for value in sensor.read())
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


def same_origin(origin: str | None, headers: Headers) -> bool:
    """serve()'s origins check: the page this server served (its Origin is the Host it asked), or no browser."""
    return origin is None or origin.lower() in (f"http://{headers['Host']}".lower(), f"https://{headers['Host']}".lower())


def route(path: str, headers: Headers, page: bytes) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """Before the handshake: the sockets' paths go on (None), the page's get the page, others 404."""
    if path in PATHS:
        return None
    if path.partition("?")[0] in PAGE_PATHS:  # ?host=...&port=... is for the page's script
        return 200, PAGE_HEADERS, page
    return 404, TEXT_HEADERS, b"Not found: the dashboard is at / and the sockets at /commands/ and /stream_data/\n"


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
    page = runner.read_page(PAGE)       # once, at start-up; cannot read it: one line, exit code 2
    acquisition = Acquisition(runner.scaled(SAMPLE_PERIOD))
    try:
        # hosts: only requests for this machine's own names (DNS rebinding), checked before route(), pages included.
        # --keepalive: ping_interval and ping_timeout; the close handshake gets half (10 s of 20, common's default).
        async with serve(functools.partial(handler, acquisition=acquisition), args.host, args.port, ssl=args.ssl,
                         origins=same_origin, process_request=functools.partial(route, page=page),
                         hosts=local_names(args.allow_host), ping_interval=args.keepalive,
                         ping_timeout=args.keepalive, close_timeout=args.keepalive / 2) as server:
            # Only now that the port is ours: a server that cannot start leaves the log alone (common/runner.py).
            acquisition.start(runner.open_log(args.log))
            runner.announce(server, args, None)     # None: the page is served here, http(s)://localhost:PORT/
            await runner.stopped()
    finally:
        if acquisition.log is not None:     # it started: say how many samples its log holds
            acquisition.shutdown()          # after the clients were closed: nothing taken is lost
            print(f"logged {acquisition.log.lines} samples to {acquisition.log.name}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = runner.options(__doc__, host=HOST, log=LOG)
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests for NAME (a DNS name or address of this machine); repeatable")
    parser.add_argument("--keepalive", type=runner.positive, default=20, metavar="SECONDS",
                        help="ping each client every SECONDS; drop one that does not answer or stops reading"
                             " for SECONDS (default: %(default)s; the tests use less)")
    args = runner.parse(parser, argv)
    return runner.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

"""test9: the WebSocket server also serves the dashboard over plain HTTP.

Lesson: a WebSocket starts life as an HTTP request (GET with "Upgrade:
websocket"), so the server that answers it can answer ordinary GETs on the
same port too. Before each handshake, serve() asks route() (its
process_request): a (status, headers, body) answer is sent as plain HTTP,
None goes on with the WebSocket handshake. Nothing to copy to other devices
any more: browse to http://<this machine's address>:5678/ and press Connect.

    GET /, /dashboard, /dashboard/   -> 200, test9/client.html (read at start-up)
    ws://HOST:5678/commands/         -> the command socket (START, STOP)
    ws://HOST:5678/stream_data/      -> the data socket: SENSOR,<ms>,<a>,<b>,<c>
    any other path                   -> 404, and never the content of a file
    a Host that is not this machine  -> 403, before anything else (see below)

The page is sent with Cache-Control: no-store (always the current one) and
X-Content-Type-Options: nosniff (the browser takes it as the HTML it says it
is). The acquisition is test8's: every sample logged, every 4th broadcast.

Who may talk to it. A socket opens only for the page this server served
(its Origin is http://<the Host it asked for>) and for clients that send no
Origin (scripts, python3 -m common client): another web site's page, open in
some browser on the network, gets 403. And every request must name this
machine in its Host header (localhost, its name or one of its addresses, or
a name given with --allow-host): this defeats DNS rebinding, where a web site
points its own name at this machine's address to pass the same-origin rule.

New since test8: route() replaces only_known_paths(), main() reads the page,
the console says which http:// address to open and prints every HTTP answer
(print_refusals() adds those that serve() gives by itself, such as 405 and
426); the Host and Origin checks.

Run:   python3 test9/server.py            (-v shows every frame; Ctrl+C stops)
Open:  http://localhost:5678/ here, or an address the server printed on
       another device; Connect, then Start and Stop.
TLS:   with --certfile (and --keyfile), the page is served on https:// and its
       sockets are wss://; without, readings and commands cross the network in
       clear text. Browsers must trust the certificate (a self-signed one: open
       https://<address>:5678/ once and accept it).
"""

import argparse
import asyncio
import contextlib
import functools
import logging
import math
import random
import re
import signal
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

# Make "common" importable when run as python3 testN/server.py from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import Headers, InvalidHandshake, ServerConnection, broadcast, runner, serve  # noqa: E402

HOST = "0.0.0.0"        # every network interface: other devices can connect
PORT = 5678             # the pages connect to this port unless told otherwise
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

    def __init__(self, period: float, stop: asyncio.Event) -> None:
        self.period = period            # seconds between two samples
        self.log: TextIO | None = None  # one line per sample, written by the sensor thread; start() gives it
        self.stop = stop                # set when the log cannot be written: the server stops
        self.error: OSError | None = None  # why the log could not be written (a full disk)
        self.count = 0                  # samples taken, so lines logged
        self.on = False                 # START sets it, STOP clears it
        self.quitting = False           # shutdown() sets it
        self.lock = threading.Lock()    # held while sampling: STOP waits for a sample in progress
        self.changed = threading.Event()  # wakes the thread when `on` or `quitting` changes
        self.data_clients: set[ServerConnection] = set()
        self.loop = asyncio.get_running_loop()
        self.thread = threading.Thread(target=self.sample_forever, name="sensor")

    def start(self, log: TextIO) -> None:
        """Start the sensor thread, which will log every sample to `log`."""
        self.log = log
        self.thread.start()

    def switch(self, on: bool) -> None:
        with self.lock:
            self.on = on
        self.changed.set()

    def shutdown(self) -> int:
        """Stop and join the sensor thread, close the log; return how many samples it holds."""
        with self.lock:
            self.quitting = True
        self.changed.set()
        self.thread.join()
        try:
            self.log.close()
        except OSError as exc:          # the last line could not be written either
            self.error = self.error or exc
        return self.count

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
        try:
            self.log.write(reading + "\n")
        except OSError as exc:          # a full disk: stop, rather than go on without a log
            self.error, self.quitting = exc, True
            self.loop.call_soon_threadsafe(self.stop.set)
            return
        if self.count % SEND_EVERY == 0:
            self.loop.call_soon_threadsafe(broadcast, self.data_clients, reading)
        self.count += 1


def client_name(ws: ServerConnection) -> str:
    """The client's address and port, to tell clients apart in the console."""
    host, port = ws.remote_address[:2]
    return f"{host}:{port}"


async def commands(ws: ServerConnection, acquisition: Acquisition, who: str) -> None:
    """The command socket: switch the sensor on and off, one reply per command."""
    async for command in ws:
        if command == "START":
            acquisition.switch(True)
            reply = "OK: acquisition started"
        elif command == "STOP":
            acquisition.switch(False)
            reply = "OK: acquisition stopped"
        elif isinstance(command, bytes):
            reply = f"ERROR: commands are text, not {len(command)} bytes of binary: START or STOP"
        elif not command.strip() or len(command) > 40 or not command.isprintable():
            # Anything a client sends ends up in the reply and the console: keep both short and readable.
            reply = f"ERROR: Command {command[:20]!r}{'...' if len(command) > 20 else ''} not found: START or STOP"
        else:
            reply = f"ERROR: Command {command} not found"
        print(f"{who} asked {command[:40]!r}; answer: {reply!r}", flush=True)
        await ws.send(reply)


async def stream_data(ws: ServerConnection, acquisition: Acquisition) -> None:
    """The data socket: receive the broadcast readings until the client leaves."""
    acquisition.data_clients.add(ws)
    try:
        async for _ in ws:
            pass  # a data client has nothing to say, but reading is how we see it leave
    finally:
        acquisition.data_clients.discard(ws)


def local_names(extra: list[str]) -> frozenset[str]:
    """The names this machine answers to in a Host header: itself, its addresses, and `extra`."""
    names = {"localhost", "127.0.0.1", "::1", socket.gethostname(), *extra}
    with contextlib.suppress(OSError):
        names.update(info[4][0].partition("%")[0] for info in socket.getaddrinfo(socket.gethostname(), None))
    return frozenset(name.lower().rstrip(".") for name in names)


def host_name(host: str) -> str | None:
    """The name in a Host header value: 'name', 'name:port', '1.2.3.4:port' or '[::1]:port'; None if malformed."""
    match = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+))(?::\d{1,5})?", host)
    return (match.group(1) or match.group(2)).lower().rstrip(".") if match else None


def same_origin(origin: str | None, headers: Headers) -> bool:
    """serve()'s origins check: the page this server served (its Origin is the Host it asked), or no browser."""
    return origin is None or origin.lower() in (f"http://{headers['Host']}".lower(), f"https://{headers['Host']}".lower())


def route(path: str, headers: Headers, page: bytes, hosts: frozenset[str]) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """Before the handshake: a Host that is not this machine gets 403; the sockets' paths go on
    (None), the page's get the page, others 404."""
    host = headers.get_all("Host")
    if len(host) != 1 or host_name(host[0]) not in hosts:
        asked = f"for host {host[0][:60]!r}" if len(host) == 1 else f"with {len(host)} Host headers"
        print(f"HTTP {path} {asked} -> 403", flush=True)
        return 403, TEXT_HEADERS, (b"Forbidden: this server answers only requests for this machine's own names"
                                   b" and addresses (start it with --allow-host NAME to add one)\n")
    if path in PATHS:
        return None
    if path.partition("?")[0] in PAGE_PATHS:  # ?host=...&port=... is for the page's script
        print(f"HTTP {path} -> 200, the dashboard", flush=True)
        return 200, PAGE_HEADERS, page
    print(f"HTTP {path} -> 404", flush=True)
    return 404, TEXT_HEADERS, b"Not found: the dashboard is at / and the sockets at /commands/ and /stream_data/\n"


def print_refusals(record: logging.LogRecord, verbose: bool) -> bool:
    """A filter on common's logger. serve() answers some requests itself, without route(): 405 for a
    method other than GET or HEAD, 426 for a browser sent to a socket's URL, 400 for a malformed
    handshake, 403 for an Origin that is not allowed. It logs each one, with the InvalidHandshake
    that says why: print those like route()'s lines. The other lines pass only with -v."""
    args = record.args if isinstance(record.args, tuple) else ()
    refusal = next((arg for arg in args if isinstance(arg, InvalidHandshake)), None)
    if refusal is not None:
        print(f"HTTP request -> {int(refusal.status)}: {refusal}", flush=True)
    return verbose or record.levelno >= logging.WARNING


async def handler(ws: ServerConnection, acquisition: Acquisition) -> None:
    """Runs once per connection: the URL path says which job the socket does."""
    who = client_name(ws)
    print(f"Hello, client {who} on {ws.path}", flush=True)
    try:
        if ws.path == "/commands/":
            await commands(ws, acquisition, who)
        else:
            await stream_data(ws, acquisition)
    finally:
        print(f"Bye, client {who}", flush=True)


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses, as its own host name resolves (no packet is sent)."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return []
    return sorted({info[4][0] for info in infos if not info[4][0].startswith("127.")})


def print_addresses(host: str, port: int, web: str) -> None:
    """Tell which address to open in a browser on another device."""
    if host not in ("0.0.0.0", "::", ""):
        print(f"only clients that can reach {host} can connect (--host 0.0.0.0 opens the server to the network)")
    elif addresses := lan_addresses():
        print(f"on another device on this network, open {' or '.join(f'{web}://{a}:{port}/' for a in addresses)}")
    else:
        print("no network address found for this host name: find it with `ip addr` (Linux),"
              " `ipconfig` (Windows) or the network settings (macOS)", flush=True)


async def run(host: str, port: int, speed: float, log: Path, page: bytes, hosts: frozenset[str],
              keepalive: float, tls: ssl.SSLContext | None) -> None:
    """Serve until Ctrl+C or SIGTERM; leaving `async with` closes every client with 1001."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C raises KeyboardInterrupt
            loop.add_signal_handler(sig, stop.set)
    acquisition = Acquisition(SAMPLE_PERIOD / speed, stop)
    try:
        # --keepalive: ping_interval and ping_timeout; the close handshake gets half (10 s of 20, common's default).
        serving = serve(functools.partial(handler, acquisition=acquisition), host, port,
                        process_request=functools.partial(route, page=page, hosts=hosts), origins=same_origin,
                        ping_interval=keepalive, ping_timeout=keepalive, close_timeout=keepalive / 2, ssl=tls)
        async with serving as server:
            # Only now that the port is ours: a server that cannot start leaves the log alone (common/runner.py).
            acquisition.start(runner.open_log(log))
            host, port = server.sockets[0].getsockname()[:2]
            print(f"listening on {'wss' if tls else 'ws'}://{host}:{port}/", flush=True)
            web = "https" if tls else "http"   # the page, on the same port
            print_addresses(host, port, web)
            print(f"open {web}://localhost:{port}/ in a browser; Ctrl+C stops the server", flush=True)
            await stop.wait()
    finally:
        if acquisition.log is not None:     # it started: say how many samples its log holds
            count = acquisition.shutdown()  # after the clients were closed: nothing taken is lost
            print(f"logged {count} samples to {acquisition.log.name}", flush=True)
    if acquisition.error is not None:   # main() prints it: "error: cannot write the log ..."
        raise OSError(f"cannot write the log {log}: {acquisition.error.strerror or acquisition.error}")
    print("server stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=HOST, help=f"address to listen on (default: {HOST}, every interface)")
    parser.add_argument("--port", type=runner.port, default=PORT, help="port to listen on (default: %(default)s; 0 picks a free one)")
    parser.add_argument("--speed", type=float, default=1.0, metavar="N",
                        help="run the clock N times faster (used by the tests)")
    parser.add_argument("--log", type=Path, default=LOG, metavar="PATH",
                        help="log every sample to PATH (default: log.txt next to this script; the previous one is kept as PATH.1)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests for NAME (a DNS name or address of this machine); repeatable")
    parser.add_argument("--keepalive", type=float, default=20, metavar="SECONDS",
                        help="ping each client every SECONDS; drop one that does not answer or stops reading"
                             " for SECONDS (default: %(default)s; the tests use less)")
    parser.add_argument("--certfile", type=Path, metavar="PATH",
                        help="serve over TLS (wss://) with this PEM certificate; the file may hold the key too")
    parser.add_argument("--keyfile", type=Path, metavar="PATH", help="the certificate's private key (PEM), if not in --certfile")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every frame: the wire view")
    args = parser.parse_args(argv)
    if args.keyfile and not args.certfile:
        parser.error("--keyfile goes with --certfile")
    if args.speed <= 0 or args.keepalive <= 0:
        parser.error("--speed and --keepalive must be more than 0")
    logging.basicConfig(format="%(asctime)s %(message)s")
    if args.verbose:
        logging.getLogger("common").setLevel(logging.DEBUG)
    else:                               # INFO: serve()'s refusals reach print_refusals()
        logging.getLogger("common").setLevel(logging.INFO)
    logging.getLogger("common").addFilter(functools.partial(print_refusals, verbose=args.verbose))
    tls = None                          # with --certfile: TLS, so wss:// instead of ws://
    if args.certfile:
        try:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(args.certfile, args.keyfile)
        except OSError as exc:          # a missing file; ssl.SSLError ("PEM lib"): not PEM, no key or not its key
            why = "not a PEM certificate with its private key" if isinstance(exc, ssl.SSLError) else exc.strerror or exc
            print(f"error: cannot load the certificate {args.certfile} (key: {args.keyfile or 'in the same file'}): {why}",
                  file=sys.stderr)
            return 2
    try:
        page = PAGE.read_bytes()
    except OSError as exc:
        print(f"error: cannot read the dashboard {PAGE}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run(args.host, args.port, args.speed, args.log, page, local_names(args.allow_host), args.keepalive, tls))
    except KeyboardInterrupt:
        pass  # Ctrl+C where the loop cannot catch signals (Windows): the server closed all the same
    except runner.LogError as exc:  # the --log file cannot be written; no file was changed
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # for example: the port is already in use
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""test5: one acquisition for everybody; all clients see it, the log keeps it all.

Lesson: several clients can share one source of data. One fake sensor is read
by a thread of its own (real hardware reads block, and must not stop the
event loop) at 4 Hz. Every sample is appended to a log file; every 4th one is
handed to the event loop (loop.call_soon_threadsafe) and sent to every data
client at once with common.broadcast(). START or STOP from any client applies
to everybody. The paths and messages are test4b's:

    ws://HOST:5678/commands/     START -> OK: acquisition started
                                 STOP  -> OK: acquisition stopped
                                 other -> ERROR: Command <other> not found
    ws://HOST:5678/stream_data/  SENSOR,<value> once a second (every 4th sample)

The log (--log, default log.txt next to this script) holds one line per
sample, exactly as sent: SENSOR,<value>. Each run starts a fresh log; the
previous run's, if it holds any sample, is kept as log.txt.1. On Ctrl+C the
thread is stopped and joined, the log closed, and the count of samples
printed: compare it with `wc -l log.txt`.

New since test4b: Acquisition owns the sensor thread, the log and the set of
data clients; stream_data() only joins and leaves that set. The thread sleeps
on a threading.Event, whose timeout is its clock and which START, STOP and
shutdown set to wake it at once: no polling.

Run:   python3 test5/server.py            (-v shows every frame; Ctrl+C stops)
Open:  test5/client.html in two tabs (or on two devices), Connect both, then
       send START and STOP from either one.
Next:  the readings scroll by as text; test6 plots them.
"""

import argparse
import asyncio
import contextlib
import functools
import logging
import math
import random
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

from common import Headers, ServerConnection, broadcast, runner, serve  # noqa: E402

HOST = "0.0.0.0"        # every network interface: other devices can connect
PORT = 5678             # the pages connect to this port unless told otherwise
PAGE = Path(__file__).resolve().with_name("client.html")
# Who may open a socket, by the Origin header that browsers send (RFC 6455 §10.2):
# this stage's page opened from disk (a file:// page sends "Origin: null") and
# scripts or `python3 -m common client` (no Origin header: None). A web site's
# page gets 403, but not a sandboxed frame in it: that sends "null" too (README, Security).
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
        reading = f"SENSOR,{sensor.read():.3f}"
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
        else:
            reply = f"ERROR: Command {command} not found"
        print(f"{who} asked {command!r}; answer: {reply!r}", flush=True)
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


def print_addresses(host: str) -> None:
    """Tell which address to type in the page on another device."""
    if host not in ("0.0.0.0", "::", ""):
        print(f"only clients that can reach {host} can connect (--host 0.0.0.0 opens the server to the network)")
    elif addresses := lan_addresses():
        print(f"on another device on this network, connect to {' or '.join(addresses)}")
    else:
        print("no network address found for this host name: find it with `ip addr` (Linux),"
              " `ipconfig` (Windows) or the network settings (macOS)")
    print("on this machine, connect to localhost", flush=True)


async def run(host: str, port: int, speed: float, log: Path, tls: ssl.SSLContext | None) -> None:
    """Serve until Ctrl+C or SIGTERM; leaving `async with` closes every client with 1001."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C raises KeyboardInterrupt
            loop.add_signal_handler(sig, stop.set)
    acquisition = Acquisition(SAMPLE_PERIOD / speed, stop)
    try:
        serving = serve(functools.partial(handler, acquisition=acquisition), host, port, process_request=only_known_paths,
                        origins=ORIGINS, ssl=tls)
        async with serving as server:
            # Only now that the port is ours: a server that cannot start leaves the log alone (common/runner.py).
            acquisition.start(runner.open_log(log))
            host, port = server.sockets[0].getsockname()[:2]
            print(f"listening on {'wss' if tls else 'ws'}://{host}:{port}/", flush=True)
            print_addresses(host)
            query = ([f"port={port}"] if port != PORT else []) + (["scheme=wss"] if tls else [])  # what the page cannot guess
            page = PAGE.as_uri() + ("?" + "&".join(query) if query else "")
            print(f"open {page} in a browser; Ctrl+C stops the server", flush=True)
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
    parser.add_argument("--certfile", type=Path, metavar="PATH",
                        help="serve over TLS (wss://) with this PEM certificate; the file may hold the key too")
    parser.add_argument("--keyfile", type=Path, metavar="PATH", help="the certificate's private key (PEM), if not in --certfile")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every frame: the wire view")
    args = parser.parse_args(argv)
    if args.keyfile and not args.certfile:
        parser.error("--keyfile goes with --certfile")
    if args.speed <= 0:
        parser.error("--speed must be more than 0")
    logging.basicConfig(format="%(asctime)s %(message)s")
    if args.verbose:
        logging.getLogger("common").setLevel(logging.DEBUG)
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
        asyncio.run(run(args.host, args.port, args.speed, args.log, tls))
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

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
ws.path. No more "COMMS"/"DATA" message and no 1008 close. Every later stage
keeps these two paths.

Run:   python3 test4b/server.py           (-v shows every frame; Ctrl+C stops)
Open:  test4b/client.html on another device (or here), type an address that
       the server printed, press Connect, then send START and STOP.
Next:  each data socket reads a sensor of its own; in test5 there is one
       acquisition for everybody, shared by every client.
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
from pathlib import Path

# Make "common" importable when run as python3 testN/server.py from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import ConnectionClosed, Headers, ServerConnection, runner, serve  # noqa: E402

HOST = "0.0.0.0"        # every network interface: other devices can connect
PORT = 5678             # the pages connect to this port unless told otherwise
PAGE = Path(__file__).resolve().with_name("client.html")
# Who may open a socket, by the Origin header that browsers send (RFC 6455 §10.2):
# this stage's page opened from disk (a file:// page sends "Origin: null") and
# scripts or `python3 -m common client` (no Origin header: None). A web site's
# page gets 403, but not a sandboxed frame in it: that sends "null" too (README, Security).
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


async def run(host: str, port: int, speed: float, tls: ssl.SSLContext | None) -> None:
    """Serve until Ctrl+C or SIGTERM; leaving `async with` closes every client with 1001."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C raises KeyboardInterrupt
            loop.add_signal_handler(sig, stop.set)
    acquisition = Acquisition(SAMPLE_PERIOD / speed)
    serving = serve(functools.partial(handler, acquisition=acquisition), host, port, process_request=only_known_paths,
                    origins=ORIGINS, ssl=tls)
    async with serving as server:
        host, port = server.sockets[0].getsockname()[:2]
        print(f"listening on {'wss' if tls else 'ws'}://{host}:{port}/", flush=True)
        print_addresses(host)
        query = ([f"port={port}"] if port != PORT else []) + (["scheme=wss"] if tls else [])  # what the page cannot guess
        page = PAGE.as_uri() + ("?" + "&".join(query) if query else "")
        print(f"open {page} in a browser; Ctrl+C stops the server", flush=True)
        await stop.wait()
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
        asyncio.run(run(args.host, args.port, args.speed, tls))
    except KeyboardInterrupt:
        pass  # Ctrl+C where the loop cannot catch signals (Windows): the server closed all the same
    except OSError as exc:  # for example: the port is already in use
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

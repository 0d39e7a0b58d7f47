"""test3: the same conversation as test2, across the network.

Lesson: a WebSocket server is reachable from other devices only if it listens
on their network. 127.0.0.1 (test1, test2) is this machine alone; 0.0.0.0
means every network interface, so a phone or a laptop on the same Wi-Fi can
connect to ws://<this machine's address>:5678/. The commands are test2's:
GET_TIME, GREET_ME, anything else is an ERROR.

New since test2: the default --host is 0.0.0.0, and the server prints the
addresses to type in the page on another device (lan_addresses() asks the
host name, sends no packet). The page no longer assumes localhost: you type
the server's address and press Connect. A firewall may still stand between
the two devices: allow incoming TCP on port 5678 if the page cannot connect.

Who else can connect: anyone who can reach the port; nothing asks who they
are (--host 127.0.0.1 keeps them out). Web sites too, through a browser: the
server accepts "Origin: null" because that is what this page sends when it is
opened from disk, but a sandboxed frame (<iframe sandbox="allow-scripts">) in
any web site sends "Origin: null" as well, with the same headers, so a site
open in a browser that can reach this server can send it commands, even on
127.0.0.1. Nothing in the handshake tells the two apart. This holds up to
test8; test9 shows the safe way: it serves its page itself and accepts only
that page's origin, never "null".

Run:   python3 test3/server.py            (-v shows every frame; Ctrl+C stops)
       --certfile cert.pem [--keyfile key.pem]: wss:// (TLS); the page needs ?scheme=wss
Open:  test3/client.html on another device (copy the file there), type an
       address that the server printed, press Connect, then send GET_TIME.
Next:  one socket, one conversation; test4 opens a second socket for data.
"""

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import sys
from datetime import datetime, timezone
from pathlib import Path

# Make "common" importable when run as python3 testN/server.py from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import ServerConnection, runner, serve  # noqa: E402

HOST = "0.0.0.0"        # every network interface: other devices can connect
PORT = 5678             # the pages connect to this port unless told otherwise
PAGE = Path(__file__).resolve().with_name("client.html")
# Who may open a socket, by the Origin header that browsers send (RFC 6455 §10.2):
# this stage's page opened from disk (a file:// page sends "Origin: null") and
# scripts or `python3 -m common client` (no Origin header: None). A web site's
# page gets 403, but not a sandboxed frame in it: that sends "null" too (README, Security).
ORIGINS = [None, "null"]
GREETING = "Hello, client!"


def timestamp() -> str:
    """The current UTC time in ISO 8601 with microseconds: 2026-11-25T17:30:00.123456Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def client_name(ws: ServerConnection) -> str:
    """The client's address and port, to tell clients apart in the console."""
    host, port = ws.remote_address[:2]
    return f"{host}:{port}"


def answer(command: str) -> str:
    """The reply to one command."""
    if command == "GET_TIME":
        return timestamp()
    if command == "GREET_ME":
        return GREETING
    return f"ERROR: Command {command} not found"


async def handler(ws: ServerConnection) -> None:
    """Runs once per connection: answer each command until the client leaves."""
    who = client_name(ws)
    print(f"Hello, client {who}", flush=True)
    try:
        async for command in ws:
            reply = answer(command)
            print(f"{who} asked {command!r}; answer: {reply!r}", flush=True)
            await ws.send(reply)
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
    async with serve(handler, host, port, origins=ORIGINS, ssl=tls) as server:
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

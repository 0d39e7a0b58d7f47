"""Command-line entries: an echo server and an interactive client.

    python3 -m common echo [-v] [--host H] [--port P] [--max-size N] [--subprotocol NAME ...]
    python3 -m common client [-v] ws://localhost:5678/
    python3 -m common explain [--from client|server] [--logged-by client|server] [--deflate] [--key KEY]
                              [--file F] [HEX or LINE ...]
    python3 -m common inspect [-v] [--host H] [--port P] [--view-host H] [--view-port P] [--cafile F] TARGET

The echo server is the usual target of conformance suites; the client prints
what arrives and sends each line typed (try it against test2: ``GET_TIME``).
``--subprotocol chat`` (repeatable, in order of preference) makes the echo
server select that subprotocol when a client offers it. It starts and stops
as a stage does (:func:`common.runner.run`): ``listening on ws://HOST:PORT/``
first; on Ctrl+C or SIGTERM it closes every connection with 1001 and the
reason "server shutting down", prints ``server stopped`` and exits with
status 0 (on Windows too, where asyncio cannot catch signals); a port in use
is one line, ``error: ...``, and status 1.
``explain`` reads frames as hex, the wire view's lines as they are (``-vv``
below: both directions at once, each frame's sender from its ``<`` or ``>``),
or an opening handshake as text, from the arguments, a file or standard
input, and says field by field what they mean (:mod:`common.explain`).
``inspect`` relays every connection to TARGET (``ws://host:port``) byte for
byte and shows each frame live in a browser page it serves on loopback
(:mod:`common.inspector`); it starts and stops as the echo server does.

-v (--verbose), before or after the command, turns on the wire view: the
library's log (the "common" logger) at DEBUG, one line per frame sent (>) or
received (<), per ping or pong (%), per state change (=) and per error (!);
the handshake's request and status lines, and the close handshake in words.
-vv adds each frame's bytes in hex (its header alone past 125 bytes of
payload), ready for ``explain``, and the handshake's headers. It changes
nothing else: asyncio's own debug messages stay off.
Ctrl+C stops either command without a traceback (exit status 130 for the client).

Whatever came from the network is shown, never obeyed: a message, a close
reason, a refusal's body or a header that holds ESC, BEL or another control
character would otherwise retitle the terminal or clear it. The client shows
a text message as it is when it is plain text, else as its ``repr()``
(``< 'hi\\x1b[2J'``), and a binary one as ``b'...'``, as
:func:`common.runner.printable` does for the stages; past
:data:`MESSAGE_LIMIT` (1000) characters or bytes it shows the first 1000 and
the length. Its other lines, and the wire view of both commands, have each
control character escaped (``\\x1b``, ``\\n``); a character the output
cannot encode is escaped too, rather than ending the client.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import threading
from collections.abc import Awaitable

from . import CloseCode, ConnectionClosed, InvalidHandshake, ServerConnection, connect, runner, serve


async def echo(ws: ServerConnection) -> None:
    """Send every message back: text as text, binary as binary."""
    async for message in ws:
        await ws.send(message)


SHUTDOWN_REASON = "server shutting down"


async def run_echo(host: str, port: int, max_size: int, subprotocols: list[str]) -> None:
    """Serve until Ctrl+C or SIGTERM, then close every connection with 1001 and SHUTDOWN_REASON.

    Run by :func:`common.runner.run`, as a stage is: the stop is the stages'
    own (:func:`common.runner.stopped`), set by the signals where the loop
    can catch them (POSIX); on Windows, where it cannot, Ctrl+C cancels this
    coroutine instead, and the server closes the same way. Its first line is
    the stages' first line, ``listening on ws://HOST:PORT/``; ``runner.run``
    prints ``server stopped`` once every connection is closed.
    """
    async with serve(echo, host, port, max_size=max_size, max_queue=64, subprotocols=subprotocols or None) as server:
        host_, port_ = server.sockets[0].getsockname()[:2]
        print(f"listening on ws://{host_}:{port_}/", flush=True)  # as runner.announce says it
        try:
            await runner.stopped()
        finally:
            server.close(CloseCode.GOING_AWAY, SHUTDOWN_REASON)


def _read_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Runs in a thread: input() blocks, so lines are handed to the loop."""
    try:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
    finally:
        loop.call_soon_threadsafe(queue.put_nowait, None)


#: The client shows a message whole up to this many characters (text) or bytes
#: (binary): a typed line or a JSON reply comes back as it went, while 1 MB
#: would bury the prompt. The stages' log, one line per command, cuts at 40.
MESSAGE_LIMIT = 1000


def shown(message: str | bytes, limit: int = MESSAGE_LIMIT) -> str:
    """A received message, fit for the terminal: readable, and unable to act on it.

    The rule of :func:`common.runner.printable`, with room for a whole
    message: plain text as it is (``hello``); text that is empty, blank or
    holds a character ``str.isprintable()`` refuses (ESC, BEL, a newline,
    U+202E) as its ``repr()``, where each one is an escape (``'hi\\x1b[2J'``);
    bytes as ``b'...'``. Past ``limit`` characters or bytes, the first
    ``limit`` and the length: ``'xx...'... (5000 characters)``.
    """
    cut = message[:limit]
    unit = "bytes" if isinstance(message, bytes) else "characters"
    length = f"... ({len(message)} {unit})" if len(message) > limit else ""
    if isinstance(cut, str) and cut.strip() and cut.isprintable():
        return cut + length
    return repr(cut) + length


def _tolerant_stdout() -> None:
    """Characters that standard output cannot encode (an ASCII console, a
    cp1252 pipe on Windows) become escapes rather than a UnicodeEncodeError:
    what a server sends must not crash the client. (Standard error does so by default.)"""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")


async def run_client(uri: str) -> int:
    try:
        ws = await connect(uri)
    except (OSError, InvalidHandshake, ValueError, TimeoutError) as exc:
        # A refusal quotes the server's body; a malformed answer, its status line.
        # str() of a TimeoutError is empty: name the exception instead.
        print(f"cannot connect to {uri}: {runner.escaped(str(exc), MESSAGE_LIMIT) or type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"connected to {uri}; type a message and press Enter (Ctrl+D to quit)", file=sys.stderr)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    threading.Thread(target=_read_lines, args=(loop, lines), daemon=True).start()

    async def print_incoming() -> None:
        async for message in ws:
            print(f"< {shown(message)}", flush=True)

    receiver = asyncio.create_task(print_incoming())
    try:
        while (line := await _first(lines.get(), receiver)) is not None:
            await ws.send(line)
        await ws.close()
        await receiver
    except ConnectionClosed as exc:  # its text quotes the close reason the server chose
        print(f"connection closed: {runner.escaped(str(exc), MESSAGE_LIMIT)}", file=sys.stderr)
        return 1
    print(f"connection closed: {runner.escaped(str(ws.protocol.closed_exception()), MESSAGE_LIMIT)}", file=sys.stderr)
    return 0


async def _first(get_line: Awaitable[str | None], receiver: asyncio.Task[None]) -> str | None:
    """The next typed line; None when the input or the connection ends."""
    getter = asyncio.ensure_future(get_line)
    done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        return getter.result()
    getter.cancel()
    receiver.result()  # raises ConnectionClosedError after an abnormal close
    return None  # the server closed normally: like the end of input


def _port(text: str) -> int:
    """argparse type for --port: an integer from 0 to 65535 (0 picks a free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, not {port}")
    return port


def _size(text: str) -> int:
    """argparse type for --max-size: a positive number of bytes."""
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of bytes: {text!r}") from None
    if size < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {size}")
    return size


VERBOSE_HELP = 'log every frame, the wire view (the "common" logger at DEBUG); -vv adds their bytes in hex'


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m common",
        description=__doc__.split("\n\n")[0],
        epilog="-v may also follow the command: client -v URI, echo -v.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    # The subcommands accept -v too. SUPPRESS as their default: a subcommand
    # without -v must not reset the -v given before it to False.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", metavar="{echo,client,explain,inspect}", required=True)
    echo_parser = commands.add_parser("echo", parents=[verbose], help="run an echo server")
    echo_parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    echo_parser.add_argument("--port", type=_port, default=5678, help="port (default: 5678; 0 picks a free one)")
    echo_parser.add_argument(
        "--max-size",
        type=_size,
        default=64 * 2**20,
        help="largest message accepted, in bytes (default: 64 MiB, enough for conformance suites)",
    )
    echo_parser.add_argument(
        "--subprotocol",
        action="append",
        default=[],
        metavar="NAME",
        help="a subprotocol to select when a client offers it (repeatable, first preferred; default: none)",
    )
    client_parser = commands.add_parser(
        "client", parents=[verbose], help="an interactive client",
        description="Send each line typed as a text message; print each message received after '< '. What"
        " the server sends is shown, never obeyed: plain text as it is, text with a control character (ESC,"
        " BEL, a newline) as its repr() with escapes, binary as b'...'; past"
        f" {MESSAGE_LIMIT} characters or bytes, the first {MESSAGE_LIMIT} and the length. Close reasons and"
        " refusals are printed with their control characters escaped.",
    )
    client_parser.add_argument("uri", help="for example ws://localhost:5678/")
    explain_parser = commands.add_parser(
        "explain", help="explain frames (hex or -vv lines) or a handshake (text), field by field",
        description="Explain WebSocket frames given as hex or as the wire view's lines, or an opening handshake"
        " given as text, field by field with the sections of RFC 6455. Input: the arguments, else --file, else"
        " standard input. Hex is the frames of one direction. Wire-view lines (what -vv logs, pasted as they"
        " are, time and address included) may hold both directions: each frame's sender comes from the < or >"
        " line before its bytes, seen from the side that wrote the log (--logged-by, else the handshake's lines,"
        " else the first frame's MASK bit), and each direction keeps its own decompression"
        " context; a frame logged by its header alone (past 125 bytes of payload) is named in one line. Frames"
        " are explained as they are read, so a capture of any length takes little memory; a handshake is read"
        " whole (at most 1,048,576 characters).",
    )
    explain_parser.add_argument("hex", nargs="*", metavar="HEX or LINE",
                                help="frame bytes in hex, such as 81 05 48 65 6c 6c 6f; or wire-view lines, each"
                                " one quoted")
    explain_parser.add_argument("--file", "-f", metavar="F", help="read the frames, the lines or the handshake from F")
    explain_parser.add_argument(
        "--from", dest="side", choices=["client", "server"],
        help="who sent the frames (hex, or a wire-view frame line without a < or > line before it): the receiver"
        " then requires that side's masking (default: the first frame's MASK bit says)",
    )
    explain_parser.add_argument(
        "--logged-by", choices=["client", "server"],
        help="which side wrote the wire-view lines, so that < is from the other side and > from this one"
        " (default: the handshake's lines say, < GET in a server's log; else the first frame's MASK bit)",
    )
    explain_parser.add_argument("--deflate", action="store_true", help="permessage-deflate was agreed: RSV1 means"
                                " compressed, and compressed messages are inflated (wire-view lines: also when"
                                " their 101 response agreed it, or a frame's line says 'compressed to')")
    explain_parser.add_argument("--key", help="the request's Sec-WebSocket-Key, to check a response's accept value")
    inspect_parser = commands.add_parser(
        "inspect", parents=[verbose], help="relay connections to a server and show every frame live in a browser",
        description="Relay every connection to TARGET byte for byte (the handshake, then the frames, unchanged"
        " both ways; plain HTTP too), and show what passes in a view page served on loopback: each connection,"
        " its handshake, and every frame field by field, live. Point clients at the inspector instead of the"
        " server: a stage's page with ?port=5679. The view answers only this machine's names and its own page"
        " (a foreign Origin, null, or a foreign Host gets 403): it shows everything, secrets included.",
        epilog="-v prints a line per connection, handshake and frame relayed, as the wire view does (seen from"
        " the client: > it sent, < it received); -vv adds the headers and each frame's bytes, which python3 -m"
        " common explain reads as they are.",
    )
    inspect_parser.add_argument("target", metavar="TARGET", help="the server: ws://HOST:PORT or wss://HOST:PORT")
    inspect_parser.add_argument("--host", default="127.0.0.1", help="address the relay listens on (default: 127.0.0.1)")
    inspect_parser.add_argument("--port", type=_port, default=5679, help="the relay's port (default: 5679; 0 picks"
                                " a free one)")
    inspect_parser.add_argument("--view-host", default="127.0.0.1", help="address the view listens on (default:"
                                " 127.0.0.1: only this machine sees the traffic)")
    inspect_parser.add_argument("--view-port", type=_port, default=5680, help="the view's port (default: 5680; 0"
                                " picks a free one)")
    inspect_parser.add_argument("--cafile", metavar="F", help="certificates to trust for a wss:// TARGET (PEM),"
                                " such as a stage's self-signed one (default: the system's)")
    return parser


def run_inspect(args: argparse.Namespace) -> int:
    """The inspector until Ctrl+C: exit codes and messages as a stage's (:func:`common.runner.run`)."""
    import logging
    import ssl

    from .connection import HEADER_BYTES
    from .inspector import parse_target, run_inspector

    try:
        target = parse_target(args.target)
        context = ssl.create_default_context(cafile=args.cafile) if target.secure else None
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.verbose:
        logging.getLogger("common.inspector").setLevel(logging.DEBUG if args.verbose == 1 else HEADER_BYTES)
    return runner.run(run_inspector(target, args.host, args.port, args.view_host, args.view_port, context))


def run_explain(args: argparse.Namespace) -> int:
    """Print the explanation as it goes; 0 if the input was read, 1 if it could not be (bad hex, no file).

    A file or standard input is read a piece at a time and each frame is
    explained as its hex arrives: memory does not grow with the number of
    frames (:func:`common.explain.explain_stream`). On bad hex, the frames
    before it stay explained and the error follows. Arguments are joined
    with spaces (hex split anywhere), or with newlines when the first is a
    whole wire-view line: each quoted argument is then a line.
    """
    from collections.abc import Iterable

    from .explain import PIECE, explain_stream, is_wire_view

    def explain_from(pieces: Iterable[str]) -> None:
        for lines in explain_stream(pieces, side=args.side, deflate=args.deflate, key=args.key,
                                    logged_by=args.logged_by):
            sys.stdout.write(lines)

    try:
        if args.hex:
            explain_from([("\n" if is_wire_view(args.hex[0]) else " ").join(args.hex)])
        elif args.file:
            with open(args.file, encoding="utf-8", errors="replace") as f:
                explain_from(iter(lambda: f.read(PIECE), ""))
        else:
            explain_from(iter(lambda: sys.stdin.read(PIECE), ""))
    except (OSError, ValueError) as exc:
        sys.stdout.flush()  # the explanation so far, then the error
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # The inspector's -v is what it relays, not the wire view of its own view's feed.
    runner.configure_logging(0 if args.command == "inspect" else args.verbose)
    if args.command == "explain":
        return run_explain(args)
    if args.command == "inspect":
        return run_inspect(args)
    if args.command == "echo":
        # Exit status, Ctrl+C (Windows too), "server stopped", "error: ..." for a port in use: the stages'.
        return runner.run(run_echo(args.host, args.port, args.max_size, args.subprotocol))
    try:
        _tolerant_stdout()
        return asyncio.run(run_client(args.uri))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"error: {runner.escaped(str(exc), MESSAGE_LIMIT)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""What every stage's ``server.py`` repeats around :func:`~common.serve`, written once.

A stage is its lesson: a docstring, constants, handlers and one ``serve()``
call. Everything else, the same in every stage, is here: the shared options,
Ctrl+C, the lines that say where to connect, the error messages and exit
codes. A whole stage's ``main`` then reads::

    from common import runner, serve

    async def run(args: runner.Args) -> None:
        async with serve(handler, args.host, args.port, ssl=args.ssl, origins=ORIGINS) as server:
            runner.announce(server, args, PAGE)    # listening on ws://...; open file:///.../client.html
            await runner.stopped()                 # until Ctrl+C or SIGTERM

    def main(argv: list[str] | None = None) -> int:
        args = runner.parse(runner.options(__doc__, host="127.0.0.1"), argv)
        return runner.run(run(args))

The pieces:

* :func:`options` builds the parser with the options every stage shares:
  ``--host``, ``--port`` (:func:`port`), ``--speed``, ``--log`` (stages that
  log), ``--certfile``/``--keyfile`` and ``-v``. A stage may add its own.
* :func:`parse` parses them, turns on the wire view for ``-v`` (the logger
  ``"common"`` at DEBUG, nothing else; ``-vv`` adds each frame's
  bytes: see :func:`common.connection.wire_view`), with every log line's
  control characters escaped (:func:`configure_logging`, :func:`escaped`:
  the wire view quotes what the peer sent), and loads the certificate into
  ``args.ssl`` (None without ``--certfile``): a bad one exits with 2 and one
  line, ``error: cannot load the certificate ...``.
* :func:`stopped` waits for Ctrl+C or SIGTERM (or :func:`stop_event` set by
  the stage itself); leaving ``async with serve(...)`` then closes every
  client with 1001, within ``close_timeout``.
* :func:`announce` prints ``listening on ws[s]://HOST:PORT/``, the addresses
  to use from another device, and the page to open.
* :func:`run` runs the stage's coroutine: 0 once stopped; 1 and
  ``error: ...`` when the port is in use; 2 when the log cannot be written.
  argparse's own errors exit with 2 before that.
* :func:`open_log` starts a fresh log and keeps the previous run's as
  ``PATH.1``. Call it *after* ``serve()`` has bound the port: a second server
  started by mistake on a busy port then fails before it moves the running
  server's log aside. When the log cannot be written it raises
  :class:`LogError` and leaves every file as it was.
* :func:`printable` renders whatever a client sent (text or bytes) short and
  readable, for a reply or the console.
* :func:`print_refusals` prints the requests that ``serve()`` refuses by
  itself (test9, where every HTTP answer gets a console line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import errno
import functools
import logging
import re
import shutil
import signal
import socket
import ssl
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TextIO

from .connection import wire_view
from .exceptions import InvalidHandshake

__all__ = ["Args", "port", "positive", "options", "parse", "stop_event", "stopped", "announce", "run",
           "open_log", "LogError", "printable", "print_refusals"]

#: What :func:`parse` returns: the options as attributes, plus ``ssl``.
Args = argparse.Namespace

PORT = 5678                 # the pages connect to this port unless told otherwise (?port=)
WILDCARDS = ("0.0.0.0", "::", "")


# ------------------------------------------------------------------ options


def port(text: str) -> int:
    """``argparse`` type: a TCP port, 1 to 65535, or 0 to let the system pick a free one.

    Raises :class:`argparse.ArgumentTypeError` for anything else, which
    argparse reports as ``error: argument --port: ...`` with exit code 2.
    """
    # Digits only: int() would also take " 80", "+80", "8_0" and "-1".
    if re.fullmatch(r"[0-9]{1,5}", text) is None or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: give 1 to 65535, or 0 to pick a free one")
    return int(text)


def positive(text: str) -> float:
    """``argparse`` type: a number more than 0 (``--speed``, test9's ``--keepalive``)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number more than 0")
    return value


def options(doc: str, *, host: str, log: Path | None = None) -> argparse.ArgumentParser:
    """The parser with the options every stage shares; add a stage's own before :func:`parse`.

    ``doc`` is the stage's docstring: its first paragraph is the help's
    description, the rest its epilog. ``host`` is the default ``--host``.
    ``log``, when given, adds ``--log PATH`` with that default.
    """
    description, _, epilog = doc.partition("\n\n")
    parser = argparse.ArgumentParser(description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    every = ", every interface" if host in WILDCARDS else ""
    parser.add_argument("--host", default=host, help=f"address to listen on (default: {host}{every})")
    parser.add_argument("--port", type=port, default=PORT, help="port to listen on (default: %(default)s; 0 picks a free one)")
    parser.add_argument("--speed", type=positive, default=1.0, metavar="N",
                        help="run the clock N times faster (used by the tests)")
    if log is not None:
        parser.add_argument("--log", type=Path, default=log, metavar="PATH",
                            help=f"log every sample to PATH (default: {log.name} next to this script;"
                                 " the previous one is kept as PATH.1)")
    parser.add_argument("--certfile", type=Path, metavar="PATH",
                        help="serve over TLS (wss://) with this PEM certificate; the file may hold the key too")
    parser.add_argument("--keyfile", type=Path, metavar="PATH", help="the certificate's private key (PEM), if not in --certfile")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log every frame: the wire view (-vv: with each frame's bytes in hex)")
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> Args:
    """Parse the command line; turn on the wire view for ``-v``/``-vv``; load the certificate into ``args.ssl``.

    ``args.ssl`` is an :class:`ssl.SSLContext` with ``--certfile`` (the
    server speaks ``wss://``), None without. A certificate or key that cannot
    be loaded exits with code 2 and one line, ``error: cannot load the
    certificate ...``, before anything listens or any log is touched.
    """
    args = parser.parse_args(argv)
    if args.keyfile and not args.certfile:
        parser.error("--keyfile goes with --certfile")
    configure_logging(args.verbose)
    args.ssl = None
    if args.certfile:
        try:
            args.ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            args.ssl.load_cert_chain(args.certfile, args.keyfile)
        except OSError as exc:          # a missing file; ssl.SSLError ("PEM lib"): not PEM, no key or not its key
            why = "not a PEM certificate with its private key" if isinstance(exc, ssl.SSLError) else exc.strerror or exc
            parser.exit(2, f"error: cannot load the certificate {args.certfile}"
                           f" (key: {args.keyfile or 'in the same file'}): {why}\n")
    return args


def configure_logging(verbosity: int) -> None:
    """Warnings from everyone; with -v or -vv, the library's wire view too.

    Each line has its control characters escaped (:func:`escaped`): the wire
    view quotes the peer's close reason, request or status line and headers
    as they came, and a terminal must not act on them.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(_EscapingFormatter("%(asctime)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    wire_view(verbosity)


class _EscapingFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        return escaped(super().formatMessage(record))


def escaped(text: str, limit: int | None = None) -> str:
    """One line of ours quoting the network (a close reason, an HTTP body, a
    header), fit for the terminal: each character ``str.isprintable()`` refuses
    becomes its escape (ESC as ``\\x1b``, a newline as ``\\n``); past ``limit``
    characters (None: no limit), the first ``limit`` and the length."""
    cut = text if limit is None or len(text) <= limit else text[:limit]
    line = "".join(char if char.isprintable() else repr(char)[1:-1] for char in cut)
    return line if cut is text else f"{line}... ({len(text)} characters)"



# ------------------------------------------------------------------ running

_stop: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar("stop", default=None)


def stop_event() -> asyncio.Event:
    """The event that Ctrl+C and SIGTERM set; a stage may set it too (test5: the disk is full).

    The first call, inside the running loop, creates it and installs the
    signal handlers (:func:`run` makes that call before the stage starts).
    """
    stop = _stop.get()
    if stop is None:
        stop = asyncio.Event()
        _stop.set(stop)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C raises KeyboardInterrupt
                loop.add_signal_handler(sig, stop.set)
    return stop


async def stopped() -> None:
    """Wait until Ctrl+C, SIGTERM or the stage itself sets :func:`stop_event`."""
    await stop_event().wait()


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses, as its own host name resolves (no packet is sent)."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos if not str(info[4][0]).startswith("127.")})


def announce(server: Any, args: Args, page: Path | None) -> None:
    """Print where the server listens, how other devices reach it, and the page to open.

    ``page`` is the stage's ``client.html``, opened from disk (``file://``,
    with ``?port=`` when not 5678 and ``?scheme=wss`` under TLS: what the
    page cannot guess); None when the server serves its page itself
    (``http(s)://localhost:PORT/``).
    """
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {'wss' if args.ssl else 'ws'}://{host}:{port}/")
    web = "https" if args.ssl else "http"
    if host not in WILDCARDS:
        print(f"only clients that can reach {host} can connect (--host 0.0.0.0 opens the server to the network)")
    elif addresses := lan_addresses():
        where = [f"{web}://{address}:{port}/" for address in addresses] if page is None else addresses
        print(f"on another device on this network, {'open' if page is None else 'connect to'} {' or '.join(where)}")
    else:
        print("no network address found for this host name: find it with `ip addr` (Linux),"
              " `ipconfig` (Windows) or the network settings (macOS)")
    if page is None:
        url = f"{web}://localhost:{port}/"
    else:
        print("on this machine, connect to localhost")
        query = ([f"port={port}"] if port != PORT else []) + (["scheme=wss"] if args.ssl else [])
        url = page.as_uri() + ("?" + "&".join(query) if query else "")
    print(f"open {url} in a browser; Ctrl+C stops the server", flush=True)


async def _main(stage: Coroutine[Any, Any, None]) -> None:
    stop_event()                        # the signal handlers, before the stage starts
    await stage


def run(stage: Coroutine[Any, Any, None]) -> int:
    """Run the stage's coroutine to its end; return the exit code for ``sys.exit()``.

    0 once stopped (``server stopped``); 2 with ``error: ...`` when the log
    cannot be written (:class:`LogError`); 1 with ``error: ...`` for any
    other :class:`OSError`, such as a port already in use. No traceback.
    """
    try:
        asyncio.run(_main(stage))
    except KeyboardInterrupt:
        pass  # Ctrl+C where the loop cannot catch signals (Windows): the server closed all the same
    except LogError as exc:             # the --log file cannot be written; no file was changed
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:              # for example: the port is already in use
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("server stopped", flush=True)
    return 0


# ------------------------------------------------------------------ the log


class LogError(OSError):
    """The log cannot be written; the message says which file and why."""


def open_log(path: Path) -> TextIO:
    """Start a fresh log at ``path``, keeping the previous one (if not empty) as ``PATH.1``.

    Call it once the server listens, never before: a server that cannot
    start must not rename the log of another one that runs. The file is
    line-buffered, so each line reaches the file whole, as it is written.

    Raises :class:`LogError` (an :class:`OSError`) if the log cannot be
    written: its folder is missing, ``path`` is a folder, or the disk is
    full. Nothing has been renamed then; a full disk is seen before anything
    is renamed, rather than at the first sample.
    """
    backup = Path(f"{path}.1")
    try:
        if path.parent.is_dir() and shutil.disk_usage(path.parent).free == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        rotated = path.is_file() and path.stat().st_size > 0
        if rotated:
            path.replace(backup)
        try:
            return open(path, "w", encoding="utf-8", buffering=1)
        except OSError:
            if rotated:                 # put the previous log back where it was
                backup.replace(path)
            raise
    except OSError as exc:
        raise LogError(f"cannot write the log {path}: {exc.strerror or exc}") from exc


# ------------------------------------------------------------------ what clients send


def printable(message: str | bytes, limit: int = 40) -> str:
    """What a client sent, fit for a reply or the console: short, one line, readable.

    Plain text of at most ``limit`` characters comes back as it is
    (``"FLY"``); bytes as their count (``"<5 bytes of binary>"``); empty,
    blank, longer or unprintable text (a newline, a NUL) as the quoted
    ``repr()`` of its first 20 characters, with ``...`` if cut.
    """
    if isinstance(message, bytes):
        return f"<{len(message)} bytes of binary>"
    if message.strip() and len(message) <= limit and message.isprintable():
        return message
    return f"{message[:20]!r}{'...' if len(message) > 20 else ''}"


def _print_refusal(record: logging.LogRecord, verbose: bool) -> bool:
    args = record.args if isinstance(record.args, tuple) else ()
    refusal = next((arg for arg in args if isinstance(arg, InvalidHandshake)), None)
    if refusal is not None:
        print(f"HTTP request -> {int(refusal.status)}: {refusal}", flush=True)
    return verbose or record.levelno >= logging.WARNING


def print_refusals(verbose: bool) -> None:
    """Print a console line for each request that ``serve()`` refuses by itself.

    Without a ``process_request`` to ask, ``serve()`` answers 403 for a Host
    or an Origin that is not allowed, 405 for a method other than GET or
    HEAD, 426 for a browser sent to a socket's URL, 400 for a malformed
    handshake. It logs each one at INFO with the
    :class:`~common.InvalidHandshake` that says why; this prints them as
    ``HTTP request -> 403: ...``. The logger's other lines still show only
    with ``verbose`` (``-v``).
    """
    logger = logging.getLogger("common")
    if not verbose:                     # INFO: serve()'s refusals reach the filter
        logger.setLevel(logging.INFO)
    logger.addFilter(functools.partial(_print_refusal, verbose=verbose))

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
  ``--host``, ``--port`` (:func:`port`), ``--speed`` (:func:`scaled`),
  ``--log`` (stages that log), ``--certfile``/``--keyfile`` and ``-v``. A
  stage may add its own.
* :func:`parse` parses them, turns on the wire view for ``-v`` (the logger
  ``"common"`` at DEBUG, nothing else; ``-vv`` adds each frame's
  bytes: see :func:`common.connection.wire_view`), with every log line's
  control characters escaped (:func:`configure_logging`, :func:`escaped`:
  the wire view quotes what the peer sent), prints a console line for every
  plain-HTTP answer and every refused handshake (:func:`print_refusals`), and
  loads the certificate into ``args.ssl`` (None without ``--certfile``): a
  bad one exits with 2 and one line, ``error: cannot load the certificate
  ...``; with one, a failed TLS handshake gets a console line too
  (``TLS handshake failed: the client spoke plain HTTP/ws, use wss://``).
* :func:`scaled` turns seconds of the stage's clock into real seconds under
  ``--speed``.
* :func:`stopped` waits for Ctrl+C or SIGTERM (or :func:`stop_event` set by
  the stage itself); leaving ``async with serve(...)`` then closes every
  client with 1001, within ``close_timeout``.
* :func:`announce` prints ``listening on ws[s]://HOST:PORT/``, the addresses
  to use from another device, and the page to open.
* :func:`run` runs the stage's coroutine: 0 once stopped; 1 and
  ``error: ...`` when the port is in use; 2 when the log cannot be written
  (at the start, or later: a full disk) or the page cannot be read.
  argparse's own errors exit with 2 before that.
* :func:`open_log` starts a fresh log and keeps the previous run's as
  ``PATH.1``. Call it *after* ``serve()`` has bound the port: a second server
  started by mistake on a busy port then fails before it moves the running
  server's log aside. When the log cannot be written it raises
  :class:`LogError` and leaves every file as it was. It returns a
  :class:`Log`, which any thread may write to: a write that fails (the disk
  is full) stops the server, and :func:`run` says why, with exit code 2.
* :func:`read_page` reads a page to serve (test9); :class:`PageError` when it
  cannot, which :func:`run` turns into one line and exit code 2.
* :func:`printable` renders whatever a client sent (text or bytes) short and
  readable, for a reply or the console.
* :func:`print_refusals` prints each plain-HTTP answer (a stage's
  ``process_request``) and each handshake that ``serve()`` refuses by itself;
  :func:`parse` turns it on for every stage.
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
from .server import ANSWERED

__all__ = ["Args", "port", "positive", "options", "parse", "scaled", "stop_event", "stopped", "announce", "run",
           "open_log", "Log", "LogError", "read_page", "PageError", "printable", "print_refusals"]

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
    """``argparse`` type: a number more than 0 (``--speed``)."""
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
    """Parse the command line; turn on the wire view for ``-v``/``-vv`` and the console
    lines of :func:`print_refusals`; load the certificate into ``args.ssl``; set :func:`scaled`'s ``--speed``.

    ``args.ssl`` is an :class:`ssl.SSLContext` with ``--certfile`` (the
    server speaks ``wss://``), None without. A certificate or key that cannot
    be loaded exits with code 2 and one line, ``error: cannot load the
    certificate ...``, before anything listens or any log is touched. Each
    TLS handshake that fails then prints one line, ``TLS handshake failed:
    ...`` (a client that spoke plain HTTP or ws:// is told to use wss://):
    the client itself sees only a dropped connection (a page: close code
    1006).
    """
    global _speed
    args = parser.parse_args(argv)
    if args.keyfile and not args.certfile:
        parser.error("--keyfile goes with --certfile")
    configure_logging(args.verbose)
    print_refusals(args.verbose > 0)
    _speed = getattr(args, "speed", 1.0)
    args.ssl = None
    if args.certfile:
        try:
            args.ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            args.ssl.load_cert_chain(args.certfile, args.keyfile)
        except OSError as exc:          # a missing file; ssl.SSLError ("PEM lib"): not PEM, no key or not its key
            why = "not a PEM certificate with its private key" if isinstance(exc, ssl.SSLError) else exc.strerror or exc
            parser.exit(2, f"error: cannot load the certificate {args.certfile}"
                           f" (key: {args.keyfile or 'in the same file'}): {why}\n")
        args.ssl.sslobject_class = _ReportedHandshake
    return args


_speed = 1.0                            # --speed, as parse() read it


def scaled(seconds: float) -> float:
    """``seconds`` of the stage's clock in real seconds: ``seconds / --speed`` (the tests run it faster)."""
    return seconds / _speed


class _ReportedHandshake(ssl.SSLObject):
    """The TLS side of each connection (asyncio's, through the context's ``sslobject_class``),
    which prints why a handshake failed: asyncio drops such a connection without a word."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise                       # not a failure: the handshake waits for more bytes
        except ssl.SSLError as exc:
            print(f"TLS handshake failed: {tls_failure(exc)}", flush=True)
            raise


def tls_failure(exc: ssl.SSLError) -> str:
    """Why a TLS handshake failed, in words: plain HTTP or ws:// to a wss:// server says what to use."""
    reason = getattr(exc, "reason", None)   # OpenSSL's name for it; SSLError made by Python has none
    if reason == "HTTP_REQUEST":        # OpenSSL saw "GET ..." where a ClientHello belongs
        return "the client spoke plain HTTP/ws, use wss:// (https:// for a page)"
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "the client closed the connection first"
    return escaped(str(reason or exc), 200)


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
    """The event that Ctrl+C and SIGTERM set; a stage may set it too, as a :class:`Log` does when the disk is full.

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


_logs: contextvars.ContextVar[list[Log] | None] = contextvars.ContextVar("logs", default=None)


async def _main(stage: Coroutine[Any, Any, None]) -> None:
    stop_event()                        # the signal handlers, before the stage starts
    logs: list[Log] = []
    _logs.set(logs)                     # open_log() adds each log here
    await stage
    for log in logs:
        if log.error is not None:       # a write failed (a full disk) and stopped the server
            raise log.error


def run(stage: Coroutine[Any, Any, None]) -> int:
    """Run the stage's coroutine to its end; return the exit code for ``sys.exit()``.

    0 once stopped (``server stopped``); 2 with ``error: ...`` when the log
    cannot be written (:class:`LogError`: at :func:`open_log`, or a
    :class:`Log` write that failed and stopped the server) or the page to
    serve cannot be read (:class:`PageError`); 1 with ``error: ...`` for any
    other :class:`OSError`, such as a port already in use. No traceback.
    """
    try:
        asyncio.run(_main(stage))
    except KeyboardInterrupt:
        pass  # Ctrl+C where the loop cannot catch signals (Windows): the server closed all the same
    except (LogError, PageError) as exc:   # the --log file cannot be written, or the page read
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


class Log:
    """A log that :func:`open_log` started: ``write()`` from any thread; a failed write stops the server.

    ``write(text)`` appends ``text`` (whole lines, each with its ``\n``)
    and counts its lines in ``lines``. When a write fails (the disk is
    full), the log keeps the first :class:`LogError` in ``error``, drops
    every later write, and sets :func:`stop_event`, from whichever thread
    wrote: the stage stops as on Ctrl+C, and :func:`run` then prints
    ``error: cannot write the log PATH: No space left on device`` and
    returns 2. The stage never needs an ``except`` of its own. ``close()``
    never raises either; a line that could not be written then is an error
    too.
    """

    def __init__(self, file: TextIO) -> None:
        self.file = file
        self.name = file.name
        self.lines = 0                  # lines written to the file
        self.error: LogError | None = None
        self._stop = _stop.get()        # run()'s stop event, if open_log() was called under run()
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()

    def write(self, text: str) -> int:
        """Append ``text``; return the characters written, 0 once a write has failed."""
        if self.error is not None:
            return 0
        try:
            written = self.file.write(text)
        except OSError as exc:
            self._fail(exc)
            return 0
        self.lines += text.count("\n")
        return written

    def close(self) -> None:
        """Close the file (what it still buffered is written first)."""
        try:
            self.file.close()
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        if self.error is None:
            self.error = LogError(f"cannot write the log {self.name}: {exc.strerror or exc}")
            self.error.__cause__ = exc
            if self._loop is not None and self._stop is not None:
                with contextlib.suppress(RuntimeError):     # the loop is closed: nothing left to stop
                    self._loop.call_soon_threadsafe(self._stop.set)

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_log(path: Path) -> Log:
    """Start a fresh log at ``path``, keeping the previous one (if not empty) as ``PATH.1``.

    Call it once the server listens, never before: a server that cannot
    start must not rename the log of another one that runs. The file is
    line-buffered, so each line reaches the file whole, as it is written.

    Raises :class:`LogError` (an :class:`OSError`) if the log cannot be
    written: its folder is missing, ``path`` is a folder, or the disk is
    full. Nothing has been renamed then; a full disk is seen before anything
    is renamed, rather than at the first sample. A disk that fills up later
    stops the server through the :class:`Log` returned.
    """
    backup = Path(f"{path}.1")
    try:
        if path.parent.is_dir() and shutil.disk_usage(path.parent).free == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        rotated = path.is_file() and path.stat().st_size > 0
        if rotated:
            path.replace(backup)
        try:
            log = Log(open(path, "w", encoding="utf-8", buffering=1))
        except OSError:
            if rotated:                 # put the previous log back where it was
                backup.replace(path)
            raise
    except OSError as exc:
        raise LogError(f"cannot write the log {path}: {exc.strerror or exc}") from exc
    if (logs := _logs.get()) is not None:
        logs.append(log)                # run() reports its error, if a write fails
    return log


# ------------------------------------------------------------------ the page


class PageError(OSError):
    """The page to serve cannot be read; the message says which file and why."""


def read_page(path: Path) -> bytes:
    """The page a stage serves itself (test9), read once at start-up.

    Raises :class:`PageError` (``cannot read the page PATH: why``), which
    :func:`run` prints as one line with exit code 2: call it inside the
    stage's coroutine, before ``serve()``.
    """
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PageError(f"cannot read the page {path}: {exc.strerror or exc}") from exc


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
        print(f"HTTP request -> {int(refusal.status)}: {escaped(str(refusal), 200)}", flush=True)
    elif record.msg == ANSWERED and len(args) == 4:    # peer, method, path, status
        print(f"HTTP {escaped(str(args[2]), 200)} -> {args[3]}", flush=True)
    return verbose or record.levelno >= logging.WARNING


_refusal_filter: Any = None             # the filter print_refusals() installed, replaced by the next call


def print_refusals(verbose: bool) -> None:
    """Print a console line for each plain-HTTP answer and each refused handshake.

    A stage's ``process_request`` answers plain HTTP (test4b's 404, test9's
    page): ``serve()`` logs each answer at INFO, and this prints it as
    ``HTTP /nowhere/ -> 404``. Without an answer from it, ``serve()``
    answers 403 for a Host or an Origin that is not allowed, 405 for a
    method other than GET or HEAD, 426 for a browser sent to a socket's URL,
    400 for a malformed handshake, and logs each one at INFO with the
    :class:`~common.InvalidHandshake` that says why; this prints them as
    ``HTTP request -> 403: ...``. The logger's other lines still show only
    with ``verbose`` (``-v``). :func:`parse` calls it for every stage; a
    second call replaces the first.
    """
    global _refusal_filter
    logger = logging.getLogger("common")
    if not verbose:                     # INFO: serve()'s refusals reach the filter
        logger.setLevel(logging.INFO)
    if _refusal_filter is not None:
        logger.removeFilter(_refusal_filter)
    _refusal_filter = functools.partial(_print_refusal, verbose=verbose)
    logger.addFilter(_refusal_filter)

"""The asyncio streams under a connection, and reading HTTP from them.

:func:`start_server` and :func:`open_connection` are asyncio's, except that
each connection's reader is a :class:`Reader`, which says when bytes come
in that nobody is waiting for (see :class:`~common.connection.Connection`).

:func:`read_head` is the one place the handshake does I/O:
:mod:`common.http11` parses bytes and :mod:`common.handshake` decides; this
module only gets the bytes of a message head off the reader, without ever
buffering more than :data:`~common.http11.MAX_HEAD` bytes (the reader's
``limit``, which :mod:`common.server` and :mod:`common.client` set to it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any, Literal, SupportsIndex

from .exceptions import InvalidMessage
from .http11 import check_start

__all__ = ["Reader", "open_connection", "read_head", "start_server"]


class Reader(asyncio.StreamReader):
    """A :class:`asyncio.StreamReader` that calls ``on_arrival`` whenever
    bytes, the end of the stream or an error come in.

    A connection whose handler waits in ``recv()`` reads the socket from the
    handler's own task; when bytes come while the handler is busy elsewhere,
    this is how the connection learns it and has a task read them, so that a
    ping is answered and the peer's close seen all the same.
    """

    on_arrival: Callable[[], None] | None = None

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        super().feed_data(data)
        if self.on_arrival is not None:
            self.on_arrival()

    def feed_eof(self) -> None:
        super().feed_eof()
        if self.on_arrival is not None:
            self.on_arrival()

    def set_exception(self, exc: Exception) -> None:
        super().set_exception(exc)
        if self.on_arrival is not None:
            self.on_arrival()


ConnectedCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def start_server(
    client_connected_cb: ConnectedCallback,
    host: str | Sequence[str] | None,
    port: int | None,
    *,
    limit: int,
    **kwargs: Any,
) -> asyncio.Server:
    """:func:`asyncio.start_server`, with a :class:`Reader` for every connection."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        return asyncio.StreamReaderProtocol(Reader(limit=limit, loop=loop), client_connected_cb, loop=loop)

    return await loop.create_server(factory, host, port, **kwargs)


async def open_connection(
    host: str, port: int, *, limit: int, **kwargs: Any
) -> tuple[Reader, asyncio.StreamWriter]:
    """:func:`asyncio.open_connection`, whose reader is a :class:`Reader`."""
    loop = asyncio.get_running_loop()
    reader = Reader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, host, port, **kwargs)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def read_head(reader: asyncio.StreamReader, kind: Literal["request", "response"] = "request") -> bytes:
    """Read up to and including the blank line that ends an HTTP head.

    ``kind`` names the message in the errors. Raises :class:`InvalidMessage`:
    at once when the first byte cannot start an HTTP message
    (:func:`~common.http11.check_start`) or the start line ends with a bare
    LF; with 400 when a later line does; with 414 when a request line alone
    is longer than the reader's limit; with 431 when the head grows past it
    (:data:`~common.http11.MAX_HEAD` for :mod:`common.server` and
    :mod:`common.client`); with 400 when the peer closes before finishing it.
    """
    start_line = await _read_start_line(reader, kind)
    # RFC 9112 §2.2 lets a recipient take a bare LF for a line end, or not.
    # Not here: every browser and WebSocket client sends CRLF, so a bare LF
    # is a hand-typed request (nc without -C, printf) or a probe, and a lone
    # LF is where two parsers may split one byte stream into different
    # messages (request smuggling, §11.2). Such a head never ends in CRLF
    # CRLF, so it would get no answer until open_timeout: the start line is
    # read alone and checked first, and a 400 says at once what to fix. The
    # rest is read in one step (a call per line cost 5 % of a connection's
    # whole work) and checked as well; only a head whose start line ends in
    # CRLF and whose header lines do not still waits for the deadline.
    try:
        rest = await reader.readexactly(2)
        if rest != b"\r\n":  # not the end already: a header line, at least "X:"
            rest += await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise InvalidMessage(f"{kind} head too large", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) from None
    except asyncio.IncompleteReadError:
        raise InvalidMessage("connection closed in the middle of the handshake") from None
    if rest.count(b"\n") != rest.count(b"\r\n"):
        raise InvalidMessage(_bare_lf(kind))
    return start_line + rest


async def _read_start_line(reader: asyncio.StreamReader, kind: str) -> bytes:
    """The request or status line, CRLF included, checked as soon as it is in."""
    started = False  # a byte came: a close now is in the middle of the head
    try:
        first = await reader.readexactly(1)
        started = True
        check_start(first)
        line = first + await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        # No line end within the reader's limit: for a request, it is the
        # target that is too long (RFC 9110 §15.5.15), not the header fields.
        if kind == "request":
            raise InvalidMessage("request line too long", HTTPStatus.REQUEST_URI_TOO_LONG) from None
        raise InvalidMessage(f"{kind} head too large", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) from None
    except asyncio.IncompleteReadError:
        raise InvalidMessage(
            "connection closed in the middle of the handshake" if started else "connection closed before the handshake"
        ) from None
    if not line.endswith(b"\r\n"):
        raise InvalidMessage(_bare_lf(kind))
    return line


def _bare_lf(kind: str) -> str:
    return f"bare LF line ending in the {kind} head: HTTP/1.1 lines end with CRLF (RFC 9112 §2.2)"

"""Reading HTTP from asyncio streams: the one place the handshake does I/O.

:mod:`common.http11` parses bytes and :mod:`common.handshake` decides; this
module only gets the bytes of a message head off a
:class:`asyncio.StreamReader`, without ever buffering more than
:data:`~common.http11.MAX_HEAD` bytes (the reader's ``limit``, which
:mod:`common.server` and :mod:`common.client` set to it).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Literal

from .exceptions import InvalidMessage
from .http11 import check_start

__all__ = ["read_head"]


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

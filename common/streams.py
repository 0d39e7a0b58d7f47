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
from .http11 import MAX_HEAD, MAX_HEADERS, check_start

__all__ = ["read_head"]


async def read_head(reader: asyncio.StreamReader, kind: Literal["request", "response"] = "request") -> bytes:
    """Read up to and including the blank line that ends an HTTP head.

    The head is read line by line, so that what is wrong with a line is
    answered as soon as the line is in, not when a deadline passes.
    ``kind`` names the message in the errors. Raises :class:`InvalidMessage`:
    at once when the first byte cannot start an HTTP message
    (:func:`~common.http11.check_start`) or a line ends with a bare LF; with
    414 when a request line alone is longer than the reader's limit; with
    431 when the head grows past :data:`~common.http11.MAX_HEAD` bytes or
    :data:`~common.http11.MAX_HEADERS` headers; with 400 when the peer
    closes before finishing it.
    """
    lines: list[bytes] = []
    size = 0
    started = False  # a byte came: a close now is in the middle of the head
    try:
        first = await reader.readexactly(1)
        started = True
        check_start(first)
        line = first + await reader.readuntil(b"\n")
        while True:
            # RFC 9112 §2.2 lets a recipient take a bare LF for a line end, or
            # not. Not here: every browser and WebSocket client sends CRLF, so
            # a bare LF is a hand-typed request (nc without -C) or a probe,
            # and a lone LF is where two parsers may split one byte stream into
            # different messages (request smuggling, §11.2). Waiting for a
            # CRLF that never comes would answer nothing until open_timeout;
            # a 400 now says what to fix.
            if not line.endswith(b"\r\n"):
                raise InvalidMessage(
                    f"bare LF line ending in the {kind} head: HTTP/1.1 lines end with CRLF (RFC 9112 §2.2)"
                )
            lines.append(line)
            size += len(line)
            if size > MAX_HEAD:
                raise InvalidMessage(f"{kind} head too large", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            if line == b"\r\n":
                return b"".join(lines)
            if len(lines) > MAX_HEADERS + 1:  # the start line, then the headers
                raise InvalidMessage(f"more than {MAX_HEADERS} headers", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        # No line end within the reader's limit. On the first line, it is the
        # target that is too long (RFC 9110 §15.5.15), not the header fields.
        if not lines and kind == "request":
            raise InvalidMessage("request line too long", HTTPStatus.REQUEST_URI_TOO_LONG) from None
        raise InvalidMessage(f"{kind} head too large", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) from None
    except asyncio.IncompleteReadError:
        raise InvalidMessage(
            "connection closed in the middle of the handshake" if started else "connection closed before the handshake"
        ) from None

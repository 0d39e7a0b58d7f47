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

from .exceptions import InvalidMessage
from .http11 import check_start

__all__ = ["read_head"]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """Read up to and including the blank line that ends an HTTP head.

    Raises :class:`InvalidMessage` with 431 when the head grows past the
    reader's limit and with 400 when the peer closes before finishing it, or
    at once when the first byte cannot start an HTTP message
    (:func:`~common.http11.check_start`).
    """
    try:
        first = await reader.readexactly(1)
        check_start(first)
        return first + await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise InvalidMessage(
            "request head too large", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
        ) from None
    except asyncio.IncompleteReadError as exc:
        raise InvalidMessage(
            "connection closed in the middle of the handshake" if exc.partial else "connection closed before the handshake"
        ) from None

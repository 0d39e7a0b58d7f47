"""The exception tree of :mod:`common`.

Every error the library raises derives from :class:`WebSocketException`::

    WebSocketException
    ├── ConnectionClosed
    │   ├── ConnectionClosedOK        (1000, 1001 or no code on both sides)
    │   └── ConnectionClosedError     (anything else, or no close frame at all)
    ├── InvalidHandshake              (carries the HTTP status to answer)
    │   ├── InvalidMessage            (not parsable as HTTP/1.1)
    │   ├── InvalidHeader             (a header is missing or wrong)
    │   │   ├── InvalidUpgrade        (Upgrade / Connection / Version)
    │   │   ├── InvalidOrigin         (403)
    │   │   └── InvalidHost           (403)
    │   ├── InvalidStatus             (client side: the server did not answer 101)
    │   └── NegotiationError          (extensions or subprotocols)
    └── ProtocolError                 (carries the close code to send)
        ├── InvalidPayload            (1007: bad UTF-8)
        └── PayloadTooBig             (1009)

Errors are mapped to HTTP statuses and close codes here, once, through the
``status`` and ``code`` attributes, so that raising code never has to know them.

This module imports nothing else from :mod:`common` at run time: the other
modules raise its exceptions, so it sits at the bottom of the import graph.
Close codes appear here as numbers, with their
:class:`~common.frames.CloseCode` names beside them.
"""

from __future__ import annotations

import dataclasses
from http import HTTPStatus
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Annotations only: frames.py raises ProtocolError, so importing it here
    # at run time would make the two modules import each other.
    from .frames import Close

__all__ = [
    "WebSocketException",
    "ConnectionClosed",
    "ConnectionClosedOK",
    "ConnectionClosedError",
    "InvalidHandshake",
    "InvalidMessage",
    "InvalidHeader",
    "InvalidUpgrade",
    "InvalidOrigin",
    "InvalidHost",
    "InvalidStatus",
    "NegotiationError",
    "ProtocolError",
    "InvalidPayload",
    "PayloadTooBig",
]


class WebSocketException(Exception):
    """Base class for every exception raised by :mod:`common`."""


class ConnectionClosed(WebSocketException):
    """Raised when using a connection that is closed.

    ``sent`` and ``rcvd`` are the close frames sent and received, or ``None``
    when there was none (for example when the TCP connection dropped).
    ``rcvd_then_sent`` tells which came first when both exist.
    """

    def __init__(
        self, rcvd: Close | None, sent: Close | None, rcvd_then_sent: bool | None = None
    ) -> None:
        self.rcvd = rcvd
        self.sent = sent
        self.rcvd_then_sent = rcvd_then_sent
        super().__init__(rcvd, sent)

    @property
    def code(self) -> int:
        """The close code received, or 1006 when no close frame arrived."""
        return self.rcvd.code if self.rcvd is not None else 1006  # ABNORMAL_CLOSURE (§7.1.5)

    @property
    def reason(self) -> str:
        return self.rcvd.reason if self.rcvd is not None else ""

    def __str__(self) -> str:
        """Which close frames went each way, such as ``received 1008 (policy
        violation), reason 'too fast'; then sent 1008 (policy violation), reason
        'too fast'``: the reason is quoted apart from the code's name."""
        rcvd, sent = _described(self.rcvd), _described(self.sent)
        if self.rcvd is None and self.sent is None:
            return "no close frame received or sent"
        if self.rcvd is None:
            return f"sent {sent}; no close frame received"
        if self.sent is None:
            return f"received {rcvd}; no close frame sent"
        if self.rcvd_then_sent:
            return f"received {rcvd}; then sent {sent}"
        return f"sent {sent}; then received {rcvd}"


def _described(close: Close | None) -> str:
    """A close frame in words: its code and name, then its reason (if any) as ``repr()``.

    The code's name is :class:`~common.frames.Close`'s own (its text without
    the reason); the reason is quoted, so that it cannot be read as part of
    the name, and its control characters are escapes.
    """
    if close is None:
        return ""
    code = str(dataclasses.replace(close, reason=""))
    return f"{code}, reason {close.reason!r}" if close.reason else code


class ConnectionClosedOK(ConnectionClosed):
    """The connection ended with 1000 (normal closure), 1001 (going away) or
    a close frame without a code (1005), which is how browsers close by default."""


class ConnectionClosedError(ConnectionClosed):
    """The connection ended with an error code, or without a close handshake."""


class InvalidHandshake(WebSocketException):
    """The opening handshake failed (RFC 6455 §4).

    ``status`` is the HTTP status a server answers with; ``headers`` are extra
    response headers (for example ``Sec-WebSocket-Version: 13`` with a 426).
    """

    status: HTTPStatus = HTTPStatus.BAD_REQUEST

    def __init__(
        self,
        message: str,
        status: HTTPStatus | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.headers = headers or []


class InvalidMessage(InvalidHandshake):
    """The peer sent something that is not a well-formed HTTP/1.1 message."""


class InvalidHeader(InvalidHandshake):
    """A header is missing, repeated or has a value we cannot accept."""


class InvalidUpgrade(InvalidHeader):
    """The request is not a WebSocket upgrade (answered with 426)."""

    status = HTTPStatus.UPGRADE_REQUIRED


class InvalidOrigin(InvalidHeader):
    """The Origin header is not in the allowed list (RFC 6455 §10.2)."""

    status = HTTPStatus.FORBIDDEN


class InvalidHost(InvalidHeader):
    """The Host header names another server (DNS rebinding, RFC 9110 §7.2)."""

    status = HTTPStatus.FORBIDDEN


class InvalidStatus(InvalidHandshake):
    """Client side: the server answered with a status other than 101.

    ``status_code`` is that status; ``body`` is what :func:`common.connect`
    read of the answer's body: its start, bounded in size and time
    (:data:`common.client.BODY_LIMIT`, :data:`common.client.BODY_TIMEOUT`).
    """

    def __init__(self, status_code: int, body: bytes = b"") -> None:
        text = body.decode(errors="replace").strip()[:200]
        detail = f": {text}" if text else ""
        super().__init__(f"server rejected WebSocket connection: HTTP {status_code}{detail}")
        self.status_code = status_code
        self.body = body


class NegotiationError(InvalidHandshake):
    """An extension or subprotocol could not be agreed on."""


class ProtocolError(WebSocketException):
    """The peer broke RFC 6455; the connection fails with ``code`` (§7.1.7)."""

    code: int = 1002  # PROTOCOL_ERROR


class InvalidPayload(ProtocolError):
    """A text message or close reason is not valid UTF-8 (RFC 6455 §8.1)."""

    code = 1007  # INVALID_DATA


class PayloadTooBig(ProtocolError):
    """A message is larger than ``max_size`` (RFC 6455 §7.4.1, code 1009)."""

    code = 1009  # MESSAGE_TOO_BIG

"""WebSocket Lab's WebSocket library: RFC 6455 on asyncio streams, standard library only.

The public names mirror the asyncio API of the ``websockets`` library::

    from common import serve, connect, broadcast

    async def handler(ws):
        async for message in ws:
            await ws.send(message)

    async with serve(handler, "127.0.0.1", 5678) as server:
        await server.serve_forever()

Modules, one concern each: :mod:`~common.frames` (the wire format),
:mod:`~common.protocol` (bytes in, events out), :mod:`~common.http11` and
:mod:`~common.handshake` (the opening handshake), :mod:`~common.deflate`
(permessage-deflate), :mod:`~common.connection` (the asyncio side),
:mod:`~common.server`, :mod:`~common.client`, :mod:`~common.broadcast`.
:mod:`~common.runner` is not part of the protocol: it holds what every
tutorial stage's ``server.py`` shares around ``serve()`` (options, Ctrl+C,
start-up lines, exit codes); ``from common import runner``.
"""

from .broadcast import broadcast
from .client import ClientConnection, connect
from .connection import Connection, Data, State
from .exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidHeader,
    InvalidHost,
    InvalidMessage,
    InvalidOrigin,
    InvalidPayload,
    InvalidStatus,
    InvalidUpgrade,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
    WebSocketException,
)
from .frames import Close, CloseCode, Opcode
from .http11 import Headers
from .server import Server, ServerConnection, local_names, serve

__all__ = [
    "serve",
    "connect",
    "broadcast",
    "local_names",
    "Server",
    "Connection",
    "ServerConnection",
    "ClientConnection",
    "Data",
    "State",
    "Headers",
    "Close",
    "CloseCode",
    "Opcode",
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

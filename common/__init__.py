"""WebSocket Lab's WebSocket library: RFC 6455 on asyncio streams, standard library only.

The public names mirror the asyncio API of the ``websockets`` library::

    from common import serve, connect, broadcast

    async def handler(ws):
        async for message in ws:
            await ws.send(message)

    async with serve(handler, "127.0.0.1", 5678) as server:
        await server.serve_forever()

Modules, one concern each: :mod:`~common.frames` (the wire format),
:mod:`~common.protocol` (the protocol without I/O: bytes in, events out, the
close handshake), :mod:`~common.http11` and :mod:`~common.handshake` (the
opening handshake), :mod:`~common.deflate` (permessage-deflate),
:mod:`~common.connection` (the asyncio adapter), :mod:`~common.streams`
(reading a handshake off a stream), :mod:`~common.options` (the connection
options), :mod:`~common.server`, :mod:`~common.client`, :mod:`~common.broadcast`.
:mod:`~common.runner` is not part of the protocol: it holds what every
tutorial stage's ``server.py`` shares around ``serve()`` (options, Ctrl+C,
start-up lines, exit codes); ``from common import runner``. Nor is
:mod:`~common.explain`, which says in words what frames and handshakes mean
(``python3 -m common explain``), through the protocol's own parsing code,
nor :mod:`~common.observer` and :mod:`~common.inspector` (``python3 -m common
inspect``: a relay that watches each connection with the protocol's own
receiver, and shows every frame live in a browser).

The names below are imported on first use (PEP 562), so that importing a
module without I/O, such as :mod:`common.frames`, does not load asyncio
through this package.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # What the lazy names are, for type checkers and editors.
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

# The module that defines each public name, imported when one of its names is first used.
_MODULES = {
    "server": ["serve", "local_names", "Server", "ServerConnection"],
    "client": ["connect", "ClientConnection"],
    "broadcast": ["broadcast"],
    "connection": ["Connection", "Data", "State"],
    "http11": ["Headers"],
    "frames": ["Close", "CloseCode", "Opcode"],
    "exceptions": [
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
    ],
}
_SOURCES = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562); later uses find it in globals()."""
    source = _SOURCES.get(name)
    if source is None:
        # Not a public name: the import system then tries a submodule of that name
        # (``from common import runner``), as for any package.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{source}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """This package's module type: it keeps ``common.broadcast`` the function.

    Importing a submodule sets it as an attribute of its package, so an
    ``import common.broadcast`` before the first use of the name would
    replace the function :func:`broadcast` with the module that defines it.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "broadcast" and isinstance(value, types.ModuleType):
            value = value.broadcast
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

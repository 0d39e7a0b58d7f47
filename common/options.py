"""The options of a connection, named once for :func:`~common.serve` and :func:`~common.connect`.

Both take them as keyword arguments and pass on those they were given; the
others take the defaults of :class:`~common.connection.Connection`'s
``__init__``, the one place where the defaults are written, and its
docstring says what each option does. A :class:`typing.TypedDict` gives the
names and types to type checkers (``**options: Unpack[ConnectionOptions]``,
PEP 692); :func:`check_names` refuses a misspelt name at run time, as Python
does for any function's unknown keyword.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, TypedDict, cast

__all__ = ["ConnectionOptions", "CONNECTION_OPTIONS", "check_names", "connection_options"]


class ConnectionOptions(TypedDict, total=False):
    """The keyword arguments that configure each connection; any may be left out."""

    max_size: int | None  #: largest incoming message in bytes; None: no limit
    max_queue: int  #: received messages that may wait for ``recv()``
    ping_interval: float | None  #: seconds between keepalive pings; None: no pings
    ping_timeout: float | None  #: seconds to wait for the pong; None: forever
    close_timeout: float  #: seconds each wait of the close handshake may take
    write_limit: int  #: bytes of send buffer beyond which ``send()`` waits


#: The names of :class:`ConnectionOptions`.
CONNECTION_OPTIONS: frozenset[str] = frozenset(ConnectionOptions.__annotations__)


def check_names(function: str, names: Iterable[str], allowed: Collection[str]) -> None:
    """Refuse the first of ``names`` not in ``allowed`` with the TypeError a
    Python function raises for an unexpected keyword argument."""
    for name in names:
        if name not in allowed:
            raise TypeError(f"{function}() got an unexpected keyword argument {name!r}")


def connection_options(options: Mapping[str, Any]) -> ConnectionOptions:
    """The connection's options among ``options``, which may hold others too."""
    return cast(ConnectionOptions, {name: value for name, value in options.items() if name in CONNECTION_OPTIONS})

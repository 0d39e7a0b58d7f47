"""The client side: :func:`connect` and :class:`ClientConnection`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Any, Unpack

from . import deflate
from .connection import Connection, format_address, log_handshake
from .exceptions import InvalidMessage
from .handshake import accept_response, build_request, generate_key
from .http11 import MAX_HEAD, Headers, parse_response
from .options import CONNECTION_OPTIONS, ConnectionOptions, check_names
from .streams import Reader, open_connection, read_head

__all__ = ["connect", "ClientConnection", "parse_uri"]

logger = logging.getLogger("common")


class ClientConnection(Connection):
    """The client's end of a WebSocket: it masks every frame it sends (§5.3)."""

    __slots__ = ()
    is_client = True


def parse_uri(uri: str) -> tuple[bool, str, int, str]:
    """Split a ``ws://`` or ``wss://`` URI into (secure, host, port, path) (§3)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"{uri!r} is not a WebSocket URI: it must start with ws:// or wss://")
    if parts.fragment:
        raise ValueError(f"{uri!r}: a WebSocket URI has no #fragment (RFC 6455 §3)")
    if not parts.hostname:
        raise ValueError(f"{uri!r} has no host")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return secure, parts.hostname, port, path


#: How much of a refusal's body the client reads: enough for the server's
#: reason (:class:`~common.exceptions.InvalidStatus` quotes 200 characters).
BODY_LIMIT = 4096
#: How long, in seconds, the client waits for that much of it to arrive.
BODY_TIMEOUT = 1.0


async def _read_body(reader: asyncio.StreamReader, headers: Headers) -> bytes:
    """The start of a refusal's body, so that the error can show the server's reason.

    The status is already known, so the body is read only as far as its
    Content-Length, :data:`BODY_LIMIT` bytes and :data:`BODY_TIMEOUT`
    seconds allow, and whatever came by then is the body: a server that
    announces more than it sends, on a connection it keeps open, does not
    hold the error back until open_timeout. A body without Content-Length
    is not read.
    """
    try:
        length = int(headers.get("Content-Length") or "0")
    except ValueError:
        return b""
    wanted = min(length, BODY_LIMIT)
    body = bytearray()
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(BODY_TIMEOUT):
            while len(body) < wanted:
                chunk = await reader.read(wanted - len(body))
                if not chunk:
                    break
                body += chunk
    return bytes(body)


class connect:
    """Open a WebSocket client connection.

    Use it as ``async with connect(uri) as ws:`` (closed on exit) or as
    ``ws = await connect(uri)``. ``origin`` sets the ``Origin`` header;
    ``extra_headers`` adds headers to the request; ``subprotocols`` lists
    the subprotocols to offer; ``compression="deflate"`` offers
    permessage-deflate (RFC 7692), None does not. ``open_timeout`` bounds the
    TCP connection and the handshake together; ``ssl`` takes an
    :class:`ssl.SSLContext` (a default one is made for ``wss://``).
    ``**options`` configure the connection (``max_size``, ``max_queue``,
    ``ping_interval``, ``ping_timeout``, ``close_timeout``,
    ``write_limit``: :class:`~common.options.ConnectionOptions`); those left
    out take the defaults of :class:`~common.connection.Connection`, whose
    docstring says what each does.
    """

    def __init__(
        self,
        uri: str,
        *,
        origin: str | None = None,
        extra_headers: Sequence[tuple[str, str]] | dict[str, str] | None = None,
        subprotocols: Sequence[str] | None = None,
        compression: str | None = "deflate",
        open_timeout: float | None = 10,
        ssl: Any = None,
        **options: Unpack[ConnectionOptions],
    ) -> None:
        check_names("connect", options, CONNECTION_OPTIONS)
        if compression not in (None, "deflate"):
            raise ValueError(f"unsupported compression {compression!r}: use 'deflate' or None")
        self.uri = uri
        self.origin = origin
        self.extra_headers = extra_headers
        self.subprotocols = subprotocols
        self.compression = compression
        self.open_timeout = open_timeout
        self.ssl = ssl
        self.options = options
        self.connection: ClientConnection | None = None

    async def _connect(self) -> ClientConnection:
        secure, host, port, path = parse_uri(self.uri)
        if self.ssl is not None and not secure:
            raise ValueError("ssl= given for a ws:// URI; use wss://")
        ssl = self.ssl if self.ssl is not None else True if secure else None
        async with asyncio.timeout(self.open_timeout):
            reader, writer = await open_connection(host, port, ssl=ssl, limit=MAX_HEAD)
            try:
                return await self._handshake(reader, writer, host, port, secure, path)
            except BaseException:
                writer.transport.abort()
                raise

    async def _handshake(
        self,
        reader: Reader,
        writer: asyncio.StreamWriter,
        host: str,
        port: int,
        secure: bool,
        path: str,
    ) -> ClientConnection:
        key = generate_key()
        default_port = 443 if secure else 80
        host_header = f"[{host}]" if ":" in host else host
        if port != default_port:
            host_header += f":{port}"
        offer = deflate.client_offer() if self.compression == "deflate" else None
        request = build_request(
            host_header,
            path,
            key,
            origin=self.origin,
            subprotocols=self.subprotocols,
            extensions=offer,
            extra_headers=self.extra_headers,
        )
        writer.write(request)
        try:
            head = await read_head(reader, "response")
            response = parse_response(head)
        except InvalidMessage as exc:
            raise InvalidMessage(f"invalid answer from the server: {exc}") from None
        if logger.isEnabledFor(logging.DEBUG):
            log_handshake(format_address(writer.get_extra_info("peername")), request, head, outgoing=True)
        if response.status != 101:
            response.body = await _read_body(reader, response.headers)
        agreed = accept_response(response, key, subprotocols=self.subprotocols, compression=self.compression)
        connection = ClientConnection(
            reader, writer, extension=agreed.extension, subprotocol=agreed.subprotocol, **self.options
        )
        connection.path = path
        connection.request_head = request
        connection.response_headers = response.headers
        connection.start()
        return connection

    def __await__(self) -> Generator[Any, None, ClientConnection]:
        return self._connect().__await__()

    async def __aenter__(self) -> ClientConnection:
        self.connection = await self._connect()
        return self.connection

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.connection is not None
        await self.connection.close()

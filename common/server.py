"""The server side: :func:`serve`, :class:`Server` and :class:`ServerConnection`.

Each TCP connection gets one task that reads the opening handshake (bounded
in size and by ``open_timeout``), answers it, and then runs the handler.
Errors are answered here, in one place: a handshake error becomes its HTTP
status with a short text body, a handler that raises becomes a 1011 close.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Any, Union, Unpack, cast

from .connection import Connection, format_address, log_handshake
from .exceptions import ConnectionClosed, InvalidHandshake
from .frames import CloseCode
from .handshake import Hosts, Origins, accept_request, check_host, host_name
from .http11 import MAX_HEAD, Headers, Request, error_response, parse_request, serialize_response
from .options import ConnectionOptions, check_names, connection_options
from .streams import Reader, read_head, start_server

__all__ = ["serve", "ServeOptions", "Server", "ServerConnection", "HTTPResponse"]

logger = logging.getLogger("common")

#: The log line of an answer that ``process_request`` gave (INFO): peer, method, path, status.
ANSWERED = "%s: %s %s answered %d by process_request"

#: What ``process_request`` may return to answer plain HTTP instead:
#: ``(status, headers, body)``, headers as a list of pairs or a dict.
HTTPResponse = tuple[int, Union[Sequence[tuple[str, str]], dict[str, str]], bytes]
ProcessRequest = Callable[[str, Headers], Union[HTTPResponse, None, Awaitable[Union[HTTPResponse, None]]]]
Handler = Callable[["ServerConnection"], Awaitable[Any]]

# Connection's own default, for the shutdown of a server not given close_timeout.
_CLOSE_TIMEOUT: float = inspect.signature(Connection).parameters["close_timeout"].default


class ServerConnection(Connection):
    """The server's end of a WebSocket: what a handler receives."""

    __slots__ = ()
    is_client = False


class Server:
    """A listening WebSocket server; use it through :func:`serve`.

    ``connections`` is the set of open connections, ready for
    :func:`~common.broadcast`. ``close()`` starts the shutdown: it stops
    listening, closes every connection with 1001 (going away) and cancels
    handlers that outlive their connection by ``close_timeout``;
    ``await wait_closed()`` waits for all of it.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        process_request: ProcessRequest | None,
        origins: Origins | None,
        hosts: Hosts | None,
        subprotocols: Sequence[str] | None,
        compression: str | None,
        open_timeout: float | None,
        connection_options: ConnectionOptions,
    ) -> None:
        if compression not in (None, "deflate"):
            raise ValueError(f"unsupported compression {compression!r}: use 'deflate' or None")
        self.handler = handler
        self.process_request = process_request
        self.origins = origins
        # Compared as check_host() sees a name: no port, no case, no final dot.
        self.hosts = hosts if hosts is None or callable(hosts) else frozenset(map(_normal_host, hosts))
        self.subprotocols = subprotocols
        self.compression = compression
        self.open_timeout = open_timeout
        self.connection_options = connection_options
        self.connections: set[ServerConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._handshaking: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._closing: asyncio.Task[None] | None = None

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets; ``sockets[0].getsockname()[1]`` is the port."""
        return tuple(self._server.sockets) if self._server is not None else ()

    async def start(self, host: str | Sequence[str] | None, port: int, **kwargs: Any) -> None:
        # limit bounds what read_head() may buffer: MAX_HEAD, then 414 (a request line) or 431.
        self._server = await start_server(self._handle, host, port, limit=MAX_HEAD, **kwargs)

    def close(self, code: int = CloseCode.GOING_AWAY, reason: str = "") -> None:
        """Start shutting down; ``await wait_closed()`` to wait for the end."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def wait_closed(self) -> None:
        if self._closing is not None:
            await asyncio.shield(self._closing)

    async def serve_forever(self) -> None:
        """Serve until cancelled (Ctrl+C in ``asyncio.run``), then close."""
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self.close()
            await self.wait_closed()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        await self.wait_closed()

    async def _close(self, code: int, reason: str) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handshaking:
            task.cancel()
        # Each close is bounded by close_timeout, so this gather is bounded too.
        await asyncio.gather(*(c.close(code, reason) for c in self.connections))
        close_timeout = self.connection_options.get("close_timeout", _CLOSE_TIMEOUT)
        if self._tasks:
            # Handlers get close_timeout to finish after their connection's
            # close (itself bounded by close_timeout), twice that in all.
            _, pending = await asyncio.wait(list(self._tasks), timeout=2 * close_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        # Python 3.12+ waits here for every client transport to be gone; every
        # task above has closed its own, so this returns promptly everywhere.
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            self._handshaking.add(task)
            try:
                connection = await self._handshake(reader, writer)
            finally:
                self._handshaking.discard(task)
            if connection is not None:
                await self._run_handler(connection)
        except asyncio.CancelledError:
            # Shutdown cancels what outlives close_timeout. This task is the
            # top of its own stack: ending it quietly keeps asyncio from
            # logging the cancellation as an error.
            pass
        except Exception:
            logger.exception("unexpected error in the connection handler")
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> ServerConnection | None:
        """Answer the opening handshake; return the connection if it opened."""
        peer = writer.get_extra_info("peername")
        try:
            async with asyncio.timeout(self.open_timeout):
                head = await read_head(reader)
                request = parse_request(head)
                # Before process_request: the pages it serves need the check as much as the sockets do.
                check_host(request.headers, self.hosts)
                response = await self._process_request(request, peer)
                if response is not None:
                    writer.write(response)
                    await writer.drain()
                    return None
                accept = accept_request(
                    request, origins=self.origins, subprotocols=self.subprotocols, compression=self.compression
                )
        except TimeoutError:
            logger.info("%s: no complete handshake within %s s; dropped", format_address(peer), self.open_timeout)
            return None
        except InvalidHandshake as exc:
            logger.info("%s: handshake refused with %d: %s", format_address(peer), exc.status, exc)
            writer.write(error_response(exc.status, f"{exc.status.phrase}: {exc}", exc.headers))
            return None
        except (ConnectionError, OSError):
            return None
        response = serialize_response(HTTPStatus.SWITCHING_PROTOCOLS, accept.headers)
        writer.write(response)
        if logger.isEnabledFor(logging.DEBUG):
            log_handshake(format_address(peer), head, response, outgoing=False)
        connection = ServerConnection(
            # streams.start_server made it a Reader; asyncio's callback type says StreamReader.
            cast(Reader, reader), writer, extension=accept.extension, subprotocol=accept.subprotocol, **self.connection_options
        )
        connection.path = request.path
        connection.request_head = head
        connection.response_headers = Headers(accept.headers)
        return connection

    async def _process_request(self, request: Request, peer: Any) -> bytes | None:
        """Let the application answer plain HTTP (test9 serves its page so).

        Each answer is logged at INFO (:data:`ANSWERED`: peer, method, path,
        status), as refusals are: the stages print both (``runner.print_refusals``).
        """
        if self.process_request is None:
            return None
        if request.method not in ("GET", "HEAD"):
            # This server answers HEAD too, so the 405 says so (RFC 9110 §15.5.6).
            raise InvalidHandshake(
                f"method {request.method} not allowed", HTTPStatus.METHOD_NOT_ALLOWED, [("Allow", "GET, HEAD")]
            )
        try:
            answer = self.process_request(request.path, request.headers)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception:
            # The application's bug, answered here like any other error: a
            # 500 for the client, the traceback for the server's log.
            logger.exception("error in process_request for %s", request.path)
            raise InvalidHandshake("the server failed to answer", HTTPStatus.INTERNAL_SERVER_ERROR) from None
        if answer is None:
            if request.method == "HEAD":
                raise InvalidHandshake("HEAD cannot open a WebSocket", HTTPStatus.METHOD_NOT_ALLOWED, [("Allow", "GET")])
            return None
        status, headers, body = answer
        logger.info(ANSWERED, format_address(peer), request.method, request.path, int(status))
        items = list(headers.items()) if isinstance(headers, dict) else list(headers)
        if not any(name.lower() == "content-length" for name, _ in items):
            items.append(("Content-Length", str(len(body))))
        items.append(("Connection", "close"))
        return serialize_response(status, items, b"" if request.method == "HEAD" else body)

    async def _run_handler(self, connection: ServerConnection) -> None:
        connection.start()
        self.connections.add(connection)
        # Checked first: formatting the arguments would cost every connection.
        verbose = logger.isEnabledFor(logging.INFO)
        if verbose:
            logger.info("%s: connection open on %s", connection.peer, connection.path)
        try:
            await self.handler(connection)
        except ConnectionClosed:
            pass  # the peer left while the handler was talking to it: ordinary
        except Exception:
            logger.exception("%s: error in the connection handler", connection.peer)
            await connection.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            # A handler that returns ends its connection normally.
            await connection.close()
            self.connections.discard(connection)
            if verbose:
                logger.info(
                    "%s: connection closed: %s", connection.peer, connection.protocol.closed_exception()
                )


class ServeOptions(ConnectionOptions, total=False):
    """:func:`serve`'s keyword arguments besides its own: those of each
    connection, and those it passes on to :func:`asyncio.start_server`.

    The latter are listed, as of Python 3.11 to 3.13, so that a misspelt
    name fails at the call; one this Python's ``start_server`` lacks
    (``keep_alive`` before 3.13) fails when the server starts.
    """

    family: int
    flags: int
    sock: socket.socket | None
    backlog: int
    reuse_address: bool | None
    reuse_port: bool | None
    ssl_handshake_timeout: float | None
    ssl_shutdown_timeout: float | None
    start_serving: bool
    keep_alive: bool | None  #: Python 3.13 and later


class serve:
    """Start a WebSocket server: ``async with serve(handler, host, port) as server``.

    ``handler(ws)`` runs once per connection. ``process_request(path,
    headers)``, plain or async, may return ``(status, headers, body)`` to
    answer plain HTTP on the same port, or None to go on with the handshake;
    ``path`` (and ``ws.path``) is the path and query, ``/chat?x=1``, also for
    a request line in absolute-form (``GET http://host:port/chat?x=1``), whose
    authority then stands for the ``Host`` header in ``headers`` and in every
    check below (RFC 9112 §3.2.2).
    ``origins``, when given, lists the allowed ``Origin`` values (None in the
    list allows requests without one, "null" allows ``file://`` pages), or
    is a function ``(origin, headers) -> bool`` that decides per request;
    others get 403. ``hosts``, when given, lists the names and addresses
    this server answers to (see :func:`local_names`), or is a function
    ``(name, headers) -> bool``: a request whose ``Host`` header names
    another server gets 403, plain HTTP included (DNS rebinding). ``subprotocols`` lists the server's subprotocols in order
    of preference. ``compression="deflate"`` negotiates permessage-deflate
    (RFC 7692) when the client offers it; None disables it. ``open_timeout``
    bounds the handshake. ``ssl`` takes an :class:`ssl.SSLContext` for
    ``wss://``. A port of 0 picks a free port.

    ``**options`` (:class:`ServeOptions`) configure each connection
    (``max_size``, ``max_queue``, ``ping_interval``, ``ping_timeout``,
    ``close_timeout``, ``write_limit``:
    :class:`~common.options.ConnectionOptions`; those left out take the
    defaults of :class:`~common.connection.Connection`, whose docstring says
    what each does), or are passed on to :func:`asyncio.start_server`
    (``backlog``, ``reuse_port``, ...).
    """

    def __init__(
        self,
        handler: Handler,
        host: str | Sequence[str] | None = None,
        port: int = 0,
        *,
        process_request: ProcessRequest | None = None,
        origins: Origins | None = None,
        hosts: Hosts | None = None,
        subprotocols: Sequence[str] | None = None,
        compression: str | None = "deflate",
        open_timeout: float | None = 10,
        ssl: Any = None,
        **options: Unpack[ServeOptions],
    ) -> None:
        check_names("serve", options, ServeOptions.__annotations__)
        connection = connection_options(options)
        self.server = Server(
            handler,
            process_request=process_request,
            origins=origins,
            hosts=hosts,
            subprotocols=subprotocols,
            compression=compression,
            open_timeout=open_timeout,
            connection_options=connection,
        )
        self.host = host
        self.port = port
        self.kwargs = {name: value for name, value in options.items() if name not in connection}
        self.kwargs["ssl"] = ssl

    async def _start(self) -> Server:
        await self.server.start(self.host, self.port, **self.kwargs)
        return self.server

    def __await__(self) -> Any:
        return self._start().__await__()

    async def __aenter__(self) -> Server:
        return await self._start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.close()
        await self.server.wait_closed()


def local_names(extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a browser on this machine or the network may use for it.

    ``localhost``, the loopback addresses, this machine's host name and the
    addresses it resolves to (looked up once, now), and ``extra`` (a DNS name
    of this machine, say): what ``serve(hosts=...)`` should accept.
    """
    names = {"localhost", "127.0.0.1", "::1", socket.gethostname(), *extra}
    with contextlib.suppress(OSError):
        names.update(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None))
    return frozenset(map(_normal_host, names))


def _normal_host(name: str) -> str:
    # A zone index ("fe80::1%eth0") is never part of a Host header.
    name = name.partition("%")[0]
    return host_name(name) or host_name(f"[{name}]") or name.lower()

"""``python3 -m common inspect TARGET``: a transparent proxy with a live view of every frame.

    python3 test2/server.py &
    python3 -m common inspect ws://localhost:5678
    # open test2/client.html?port=5679, and the view: http://localhost:5680/

The inspector listens (``127.0.0.1:5679`` by default) and relays each TCP
connection to TARGET byte for byte, both ways: the opening handshake, then
the frames, never re-framed, re-masked nor re-compressed, so that neither
peer can tell it is there. The client's ``Host`` and ``Origin`` go through
unchanged, so the target's own checks still apply. Plain HTTP requests are
relayed the same way (test9's dashboard works through it). The TCP ends are
relayed too: a side that ends its direction (FIN) has it ended on the other
leg, so that who closes first stays who closes first.

Each direction's bytes are also handed, as they pass, to a
:class:`~common.observer.Watch`: the library's own receiver and
decompressor, as each peer runs them. What it sees goes to the **view**, a
page that the inspector serves on loopback (``http://localhost:5680/``)
and feeds over a WebSocket (``/feed``, JSON; see ``inspector.html``): one
row per connection, and for the chosen one its handshake and every frame,
each of which opens into ``python3 -m common explain``'s explanation. With
``-v`` the inspector also writes what it relays as the wire view does, seen
from the client (``>`` it sent, ``<`` it received); ``-vv`` adds the headers
and each frame's bytes, so that ``inspect -vv 2> wire.log`` then ``explain
--file wire.log`` explains every frame of every connection, both ways.

Only the learner sees the traffic: the view shows everything, secrets
included, so its page and feed answer only this machine's names (``Host``,
:func:`~common.local_names`) and its feed only the view's own page (its
``Origin`` must be the view's address: another site's page, a sandboxed
frame's ``null``, a script without Origin get 403).

Bounded: the inspector keeps :data:`FRAMES_KEPT` frames per connection and
:data:`CONNECTIONS_KEPT` connections (the oldest closed ones go first), and
:data:`~common.observer.PREVIEW` bytes of each payload. Relaying never waits
for the view: updates are batched every :data:`FLUSH` seconds and sent with
:func:`~common.broadcast`, which skips a view that does not keep up; past
:data:`BACKLOG` updates in one batch the rest are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, cast
from urllib.parse import urlsplit

from . import runner
from .broadcast import broadcast
from .connection import HEADER_BYTES, describe_frame, format_address, log_handshake, wire_hex
from .explain import code_meaning, explain_observed
from .http11 import Headers, error_response
from .observer import PREVIEW, Frame, Handshake, Watch, preview_text
from .server import HTTPResponse, ServerConnection, local_names, serve

__all__ = ["Target", "parse_target", "Inspector", "inspecting", "run_inspector", "FRAMES_KEPT", "CONNECTIONS_KEPT"]

logger = logging.getLogger("common.inspector")

RELAY_PORT = 5679
VIEW_PORT = 5680
#: Frames kept per connection, for the view's table and a page opened later.
FRAMES_KEPT = 500
#: Connections kept; past it, the oldest closed one is forgotten.
CONNECTIONS_KEPT = 50
#: Seconds between two messages of the view's feed.
FLUSH = 0.1
#: Updates in one message of the feed at most; the rest are dropped, and counted.
BACKLOG = 500
#: Bytes handed to the watch at a time: the frames one piece completes are
#: held together while they are looked at (a few hundred bytes each, so a
#: piece of tiny frames costs ~80 times its size).
WATCH_PIECE = 1 << 13
#: Seconds to wait for the target to accept a connection.
CONNECT_TIMEOUT = 10.0
#: Events in one message of a snapshot (what a page opened late gets).
SNAPSHOT_CHUNK = 500

OPCODE_KINDS = {0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}
PAGE_HEADERS = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer")]


@dataclass(frozen=True)
class Target:
    """Where the inspector relays to: ``ws://host:port`` or ``wss://host:port``."""

    scheme: str
    host: str
    port: int

    @property
    def secure(self) -> bool:
        return self.scheme == "wss"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_target(text: str) -> Target:
    """Read TARGET; ValueError, in words, for anything but ``ws[s]://host[:port]``."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a WebSocket address: {exc}") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{text!r} is not a WebSocket address: give ws://HOST:PORT or wss://HOST:PORT,"
                         " such as ws://localhost:5678")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{text!r}: give the server's address alone (ws://HOST:PORT); each client's own"
                         " path is relayed as it asks for it")
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "wss" else 80))


@dataclass
class Relayed:
    """One relayed connection: what the inspector saw of it and keeps for the view."""

    id: int
    client: str
    watch: Watch
    started: float = field(default_factory=time.time)
    frames: deque[tuple[int, Frame]] = field(default_factory=lambda: deque(maxlen=FRAMES_KEPT))
    notes: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    number: int = 0                     # frames seen, both ways: the next frame's number - 1
    failed: str = ""                    # why the inspector stopped watching (a bug of its own)
    unreachable: str = ""               # why the target could not be reached (the client got 502)
    over: bool = False                  # TCP is over both ways


class Inspector:
    """The relay and the view's state, for one TARGET.

    :meth:`relay` makes the protocol of each relayed connection (``loop.create_server``);
    :meth:`feed` and :meth:`route` are the view's WebSocket handler and HTTP
    answers (:func:`~common.serve`). ``ssl_context`` verifies a ``wss://``
    target (default: the system's trusted certificates).
    """

    def __init__(self, target: Target, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.target = target
        self.ssl_context = (ssl_context or ssl.create_default_context()) if target.secure else None
        self.relay_url = ""             # where clients connect, and the ports bound, once listening
        self.relay_port = 0             # (see inspecting)
        self.view_port = 0
        self.page = resources.files(__package__).joinpath("inspector.html").read_bytes()
        self.connections: OrderedDict[int, Relayed] = OrderedDict()
        self.viewers: set[ServerConnection] = set()
        self._ids = itertools.count(1)
        self._legs: set[_Leg] = set()          # every TCP connection relayed, both legs
        self._tasks: set[asyncio.Task[None]] = set()  # connections to the target being opened
        self._pending: list[dict[str, Any]] = []
        self._dropped = 0
        self._flush_handle: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ the relay

    def relay(self) -> _Leg:
        """The protocol of a client's connection (``loop.create_server``): it opens the target's."""
        return _Leg(self, "client")

    async def _connect(self, relayed: Relayed, client: _Leg) -> None:
        """Open the target's leg of ``relayed``; a 502 to the client if the target cannot be reached."""
        loop = asyncio.get_running_loop()
        try:
            _, server = await asyncio.wait_for(loop.create_connection(
                lambda: _Leg(self, "server", client), self.target.host, self.target.port, ssl=self.ssl_context,
                server_hostname=self.target.host if self.ssl_context else None), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            why = str(exc) or f"no answer within {CONNECT_TIMEOUT:.0f} s"
            relayed.unreachable = f"the inspector cannot reach {self.target}: {why}"
            relayed.notes.append(relayed.unreachable + "; the client got 502 from the inspector")
            logger.warning("%s ! %s", relayed.client, relayed.unreachable)
            # The answer, then FIN; what the client sent is read and dropped (closing on unread
            # bytes would reset the connection, and the answer with it), for a bounded time.
            client.transport.write(error_response(502, relayed.unreachable))
            client.transport.write_eof()
            client.transport.resume_reading()
            loop.call_later(CONNECT_TIMEOUT, client.transport.abort)
            return
        if client not in self._legs:    # the client left meanwhile
            server.transport.close()
            return
        client.other = server
        client.transport.resume_reading()  # what the client sent meanwhile waited in the kernel

    def _over(self, relayed: Relayed) -> None:
        if relayed.over:
            return
        relayed.over = True
        relayed.watch.end()
        logger.debug("%s = relayed connection is over: %s", relayed.client, self._how(relayed))
        self._changed(relayed)

    # ------------------------------------------------------------------ watching

    def _new(self, client: str) -> Relayed:
        number = next(self._ids)
        relayed = Relayed(number, client, Watch())
        relayed.watch.on_note = functools.partial(self._note, relayed)
        self.connections[number] = relayed
        while len(self.connections) > CONNECTIONS_KEPT:
            oldest = next((key for key, each in self.connections.items() if each.over), None)
            if oldest is None:
                break
            del self.connections[oldest]
        logger.debug("%s = new connection, relayed to %s", client, self.target)
        self._changed(relayed)
        return relayed

    def _note(self, relayed: Relayed, note: str) -> None:
        relayed.notes.append(note)
        logger.debug("%s ! %s", relayed.client, note)

    def _observe(self, relayed: Relayed, side: str, data: bytes) -> None:
        """What ``side`` sent, to the watch, and what it saw to the view; never an error for the relay."""
        if relayed.failed:
            return
        watch = relayed.watch
        state = watch.state
        feed = watch.client_data if side == "client" else watch.server_data
        try:
            for start in range(0, len(data), WATCH_PIECE):
                self._seen(relayed, side, feed(data[start : start + WATCH_PIECE]))
        except Exception as exc:  # a bug of the inspector's must not break the connection it relays
            relayed.failed = f"the inspector stopped reading this connection: {exc!r}"
            relayed.notes.append(relayed.failed)
            logger.exception("%s ! %s", relayed.client, relayed.failed)
            self._changed(relayed)
            return
        if watch.state != state:
            self._changed(relayed)

    def _seen(self, relayed: Relayed, side: str, seen: list[Frame | Handshake]) -> None:
        changed = False
        for item in seen:
            if isinstance(item, Handshake):
                self._log_head(relayed, side, item)
                changed = True
            else:
                self._frame(relayed, item)
                changed = changed or item.error is not None or item.close is not None
        if changed:
            self._changed(relayed)

    def _ended(self, relayed: Relayed, side: str) -> None:
        logger.debug("%s = the %s ended its side of TCP", relayed.client, side)
        if relayed.failed:
            return
        frame = relayed.watch.eof(side)
        if frame is not None:
            self._frame(relayed, frame)

    def _frame(self, relayed: Relayed, frame: Frame) -> None:
        relayed.number += 1
        relayed.frames.append((relayed.number, frame))
        if logger.isEnabledFor(logging.DEBUG):
            self._log_frame(relayed, frame)
        if self.viewers:
            self._emit(self._frame_event(relayed, relayed.number, frame))

    def _log_head(self, relayed: Relayed, side: str, handshake: Handshake) -> None:
        """``-v``: the head's first line; ``-vv``: its headers too, as the client's wire view writes them."""
        request, response = handshake.request_head, handshake.response_head
        log_handshake(relayed.client, request if side == "client" else b"", response if side == "server" else b"",
                      outgoing=True, log=logger)

    def _log_frame(self, relayed: Relayed, frame: Frame) -> None:
        """``-v``: the frame in one line; ``-vv``: its bytes too, ready for ``python3 -m common explain``.

        The lines are the wire view's (:func:`~common.connection.describe_frame`), seen from the
        client: ``>`` what it sent, ``<`` what it received.
        """
        header = frame.header
        mark = ">" if frame.side == "client" else "<"
        length = frame.inflated if frame.inflated is not None else header.length
        line = describe_frame(header.opcode, frame.preview, header.fin, frame.compressed, header.length, length)
        logger.debug("%s %s %s", relayed.client, mark, line)
        if logger.isEnabledFor(HEADER_BYTES):
            wire = frame.wire if header.length <= 125 else frame.wire[: header.size]
            logger.log(HEADER_BYTES, "%s     %s", relayed.client, wire_hex(wire, header.length))

    # ------------------------------------------------------------------ the view's events

    def _changed(self, relayed: Relayed) -> None:
        if self.viewers:
            self._emit(self._connection_event(relayed))

    def _emit(self, event: dict[str, Any]) -> None:
        """Queue an update for the view; never wait, and past :data:`BACKLOG`, drop it."""
        if len(self._pending) >= BACKLOG:
            self._dropped += 1
        else:
            self._pending.append(event)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        events, self._pending = self._pending, []
        if self._dropped:
            events.append({"type": "dropped", "count": self._dropped})
            self._dropped = 0
        if events and self.viewers:
            broadcast(self.viewers, json.dumps(events))

    def _how(self, relayed: Relayed) -> str:
        watch = relayed.watch
        if relayed.failed or relayed.unreachable:
            return relayed.failed or relayed.unreachable
        if watch.state == "http":
            return "plain HTTP"
        if watch.state == "refused":
            response = watch.handshake.response
            return f"refused: {response.status} {response.reason}" if response else "refused"
        return watch.how_closed() or watch.state

    def _connection_event(self, relayed: Relayed) -> dict[str, Any]:
        watch = relayed.watch
        handshake = watch.handshake
        request, response = handshake.request, handshake.response
        return {
            "type": "connection", "id": relayed.id, "client": relayed.client, "started": relayed.started,
            "method": request.method if request else None, "path": request.path if request else None,
            "upgrade": handshake.upgrade,
            "status": response.status if response else 502 if relayed.unreachable else None,
            "reason": response.reason if response else "Bad Gateway (from the inspector)" if relayed.unreachable else None,
            "subprotocol": response.headers.get("Sec-WebSocket-Protocol") if response else None,
            "extensions": ", ".join(response.headers.get_all("Sec-WebSocket-Extensions")) or None if response else None,
            "state": "failed" if relayed.failed or relayed.unreachable else watch.state,
            "closed": self._how(relayed) if relayed.over or watch.first_close or relayed.unreachable else None,
            "request": _head(handshake.request_head, request.headers if request else None),
            "response": _head(handshake.response_head, response.headers if response else None),
            "accept": handshake.accept or None,
            **_counts(watch),
            "notes": list(relayed.notes),
        }

    def _frame_event(self, relayed: Relayed, number: int, frame: Frame) -> dict[str, Any]:
        header = frame.header
        shown, preview = preview_text(frame)
        close = frame.close
        error = frame.error
        return {
            "type": "frame", "conn": relayed.id, "n": number, "t": frame.time, "from": frame.side,
            "fin": header.fin, "rsv1": header.rsv1, "opcode": header.opcode,
            "kind": OPCODE_KINDS.get(header.opcode, "reserved"),
            "message": OPCODE_KINDS.get(frame.message) if frame.message is not None else None,
            "masked": header.masked, "key": header.mask_key.hex(" ") if header.mask_key else None,
            "length": header.length, "length_bits": header.length_bits,
            "header": frame.wire[: header.size].hex(" "),
            "preview": preview, "preview_is": shown, "cut": frame.cut,
            "compressed": frame.compressed, "inflated": frame.inflated,
            "close": {"code": close.code, "reason": close.reason, "meaning": code_meaning(close.code)} if close else None,
            "error": {"text": str(error), "code": error.code, "meaning": code_meaning(error.code)} if error else None,
            **_counts(relayed.watch),
        }

    def _snapshot(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = [{"type": "hello", "target": str(self.target), "relay": self.relay_url,
                                         "frames_kept": FRAMES_KEPT, "preview": PREVIEW}]
        for relayed in self.connections.values():
            events.append(self._connection_event(relayed))
            events += [self._frame_event(relayed, number, frame) for number, frame in relayed.frames]
        return events

    # ------------------------------------------------------------------ the view

    def route(self, path: str, headers: Headers) -> HTTPResponse | None:
        """The view's HTTP answers: its page at ``/``, the feed's handshake at ``/feed``, 404 elsewhere."""
        if path == "/":
            return 200, PAGE_HEADERS, self.page
        if path == "/feed":
            return None
        return 404, [("Content-Type", "text/plain; charset=utf-8")], b"not found: the view is at /\n"

    async def feed(self, ws: ServerConnection) -> None:
        """One view page: everything kept, then live updates; it may ask for an explanation or a snapshot."""
        await self._send_snapshot(ws)
        self.viewers.add(ws)
        try:
            async for message in ws:
                await self._answer(ws, message)
        finally:
            self.viewers.discard(ws)

    async def _send_snapshot(self, ws: ServerConnection) -> None:
        events = self._snapshot()
        for start in range(0, len(events), SNAPSHOT_CHUNK):
            await ws.send(json.dumps(events[start : start + SNAPSHOT_CHUNK]))

    async def _answer(self, ws: ServerConnection, message: str | bytes) -> None:
        try:
            request = json.loads(message)
            kind = request["type"]
        except (ValueError, TypeError, KeyError):
            return  # the view's own page sends only what it should; anything else is ignored
        if kind == "snapshot":
            await self._send_snapshot(ws)
        elif kind == "explain":
            await ws.send(json.dumps([self._explanation(request.get("conn"), request.get("n"))]))

    def _explanation(self, conn: Any, number: Any) -> dict[str, Any]:
        answer: dict[str, Any] = {"type": "explanation", "conn": conn, "n": number, "text": None}
        relayed = self.connections.get(conn) if isinstance(conn, int) else None
        frame = next((frame for n, frame in relayed.frames if n == number), None) if relayed else None
        if relayed is None or frame is None:
            answer["error"] = "no longer kept: the inspector keeps the last %d frames of a connection" % FRAMES_KEPT
            return answer
        deflate = relayed.watch.handshake.deflate is not None
        answer["text"] = explain_observed(frame, f"frame {number}", deflate=deflate)
        return answer

    def origin_allowed(self, origin: str | None, headers: Headers) -> bool:
        """The feed opens only for the view's own page: its Origin is ``http://`` + the Host it asked for."""
        return origin is not None and origin == "http://" + (headers.get("Host") or "")

    def close(self) -> None:
        """Abort every relayed connection (the peers see TCP reset, as if the inspector were gone)."""
        for leg in list(self._legs):
            leg.transport.abort()
        for task in self._tasks:
            task.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()


class _Leg(asyncio.Protocol):
    """One TCP connection of a relayed pair: what it receives is watched, then written to the other leg.

    Flow control goes end to end: when the other leg's transport has more
    to write than its high-water mark, this leg stops reading (TCP then
    pushes back on its peer), and reads again once that drained. An end of
    TCP (FIN) is passed on as one (TLS, which has no half-close, closes
    instead); a leg reset resets the other, a leg closed closes the other
    once its writes are out.
    """

    def __init__(self, inspector: Inspector, side: str, other: _Leg | None = None) -> None:
        self.inspector = inspector
        self.side = side                # who is at the other end of this TCP connection
        self.other = other              # the client's leg learns the server's once it is open
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self.relayed: Relayed | None = other.relayed if other is not None else None
        self.ended = False              # its peer ended its direction (FIN)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        inspector = self.inspector
        inspector._legs.add(self)
        if self.other is not None:      # the target's leg: the pair is complete
            return
        self.relayed = inspector._new(format_address(transport.get_extra_info("peername")))
        self.transport.pause_reading()  # until the target's leg is open
        task = asyncio.get_running_loop().create_task(inspector._connect(self.relayed, self))
        inspector._tasks.add(task)
        task.add_done_callback(inspector._tasks.discard)

    def data_received(self, data: bytes) -> None:
        assert self.relayed is not None
        self.inspector._observe(self.relayed, self.side, data)
        if self.other is not None:      # None: the target could not be reached, the client got a 502
            self.other.transport.write(data)

    def eof_received(self) -> bool:
        assert self.relayed is not None
        self.ended = True
        self.inspector._ended(self.relayed, self.side)
        other = self.other
        if other is None:
            return False
        if not other.transport.is_closing():
            half_close = other.transport.can_write_eof()  # TLS cannot
            if half_close:
                other.transport.write_eof()  # the other peer sees this one's FIN: the same close order
            if other.ended or not half_close:
                other.transport.close()
        # Both directions over: this leg closes too; else it goes on writing the other way.
        return not other.ended

    def connection_lost(self, exc: Exception | None) -> None:
        inspector = self.inspector
        inspector._legs.discard(self)
        other = self.other
        if other is not None and other in inspector._legs:
            if exc is not None:
                other.transport.abort()  # a reset on one leg resets the other: the peers see what happened
            elif not other.transport.is_closing():
                other.transport.close()  # both ends of this leg are done: the other leg finishes its writes
            return
        if self.relayed is not None and (other is not None or self.side == "client"):
            inspector._over(self.relayed)

    def pause_writing(self) -> None:
        if self.other is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None and not self.other.transport.is_closing():
            self.other.transport.resume_reading()


def _head(head: bytes, headers: Headers | None) -> dict[str, Any] | None:
    if not head or headers is None:
        return None
    return {"line": head.split(b"\r\n", 1)[0].decode("latin-1"), "headers": headers.items()}


def _counts(watch: Watch) -> dict[str, Any]:
    counts = watch.counts
    return {"frames": {side: counts[side].frames for side in counts},
            "bytes": {side: counts[side].bytes for side in counts}}


@contextlib.asynccontextmanager
async def inspecting(target: Target, host: str = "127.0.0.1", port: int = RELAY_PORT, view_host: str = "127.0.0.1",
                     view_port: int = VIEW_PORT, *, ssl_context: ssl.SSLContext | None = None,
                     ) -> AsyncIterator[Inspector]:
    """The relay and the view, listening, until the block ends: then every relayed connection is aborted.

    The inspector gets ``relay_port`` and ``view_port``, the ports bound (for port 0).
    """
    inspector = Inspector(target, ssl_context=ssl_context)
    relay = await asyncio.get_running_loop().create_server(inspector.relay, host, port)
    try:
        relay_host, inspector.relay_port = relay.sockets[0].getsockname()[:2]
        inspector.relay_url = f"ws://{_url_host(relay_host)}:{inspector.relay_port}/"
        async with serve(inspector.feed, view_host, view_port, process_request=inspector.route,
                         origins=inspector.origin_allowed, hosts=local_names()) as view:
            inspector.view_port = view.sockets[0].getsockname()[1]
            try:
                yield inspector
            finally:
                relay.close()
                inspector.close()
    finally:
        relay.close()
        await relay.wait_closed()


async def run_inspector(target: Target, host: str, port: int, view_host: str, view_port: int,
                        ssl_context: ssl.SSLContext | None = None) -> None:
    """Relay and serve the view until Ctrl+C or SIGTERM; what :func:`runner.run` runs."""
    async with inspecting(target, host, port, view_host, view_port, ssl_context=ssl_context) as inspector:
        relay = inspector.relay_port
        print(f"relaying {inspector.relay_url} to {target}: connect clients to the inspector instead")
        print(f"a stage's page goes through it with ?port={relay}, such as test2/client.html?port={relay}")
        print(f"the view: open http://localhost:{inspector.view_port}/ in a browser; Ctrl+C stops the inspector",
              flush=True)
        await runner.stopped()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host

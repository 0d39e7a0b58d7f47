"""A WebSocket connection over asyncio streams (RFC 6455 §5–§7).

This is the asyncio adapter around :class:`~common.protocol.Protocol`, which
holds the protocol itself without I/O (state, framing, the close handshake's
frames). The socket is read in large chunks and fed to the protocol by the
handler's own task while it waits in :meth:`Connection.recv`, else by a
reading task, started when bytes come that nobody is waiting for (see
:meth:`Connection.start`); the adapter writes the pongs it makes at once,
queues messages for :meth:`Connection.recv`, decides when to answer the
peer's close (after the messages before it were delivered), and owns the
transport, the timers and the backpressure.
Writing never blocks: while received messages wait for the application, the
frames it writes are joined into one write to the transport (at the end of
the loop's turn, or as soon as :meth:`Connection.recv` is about to wait), and :meth:`Connection.send`
only awaits while more than ``write_limit`` bytes wait to be sent, so a send
does not yield to the event loop while the peer keeps up.

What a peer can make a connection hold is bounded, whatever it sends or
withholds: at most ``max_queue`` messages wait for the application (the
receiver leaves the rest of a read unparsed and reading pauses until the
queue is down to a quarter); while our
pongs pile up unread beyond ``write_limit``, no more pings are read; and once
the peer's EOF or our close frame is seen, the connection is gone within
``close_timeout``, aborted if what we still have to send will not drain.

All methods must be called from the event loop's thread. A thread that wants
to send hands the data over with ``loop.call_soon_threadsafe`` (or
``asyncio.run_coroutine_threadsafe(ws.send(data), loop)``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Union, cast

from .exceptions import ConnectionClosedOK, ProtocolError
from .frames import Close, CloseCode, Opcode, is_valid_close_code
from .http11 import Headers, parse_request
from .protocol import Extension, Ping, Pong, Protocol, State, check_control_payload
from .streams import Reader

__all__ = ["Connection", "State", "Data", "format_address", "log_handshake", "HEADER_BYTES", "wire_view",
           "describe_frame", "wire_hex"]

logger = logging.getLogger("common")

#: The wire view's second level (``-vv``), below DEBUG: every frame's bytes in
#: hex (its header alone past 125 bytes of payload), ready for ``python3 -m
#: common explain``, and the handshake's headers.
HEADER_BYTES = 5
logging.addLevelName(HEADER_BYTES, "HEADER_BYTES")


def wire_view(verbosity: int) -> None:
    """Turn the wire view on: 1 (``-v``) logs every frame, the handshake's
    first lines and the close handshake in words; 2 (``-vv``) adds each
    frame's bytes (its header alone past 125 bytes of payload) and the
    handshake's headers. Only the "common"
    logger changes: asyncio's own debug lines stay off."""
    if verbosity > 0:
        logger.setLevel(logging.DEBUG if verbosity == 1 else HEADER_BYTES)

Data = Union[str, bytes]

# How much one read asks for. Large reads let one feed() parse many frames;
# asyncio's selector transport reads at most 256 KiB at a time anyway.
READ_SIZE = 262144

# asyncio receives every read into a new 256 KiB buffer, which glibc's malloc
# gives from mmap while that size is over its mmap threshold (128 KiB at
# start): each read then costs mmap, mremap and munmap calls and fresh pages,
# about 20 us of a 60 us round trip here. glibc raises the threshold when a
# block over it is freed whole, which the reads never do (they shrink theirs
# first), so whether it happened depended on what else the process freed,
# and the echo server's CPU per round trip or per connection flipped by 20-40 %
# between builds. Freeing one such block now settles it; with another
# allocator this is one allocation and nothing else.
bytes(2 * READ_SIZE)

# Up to this size, bytes to send may wait to be joined with others into one write.
_JOIN_LIMIT = 16384


def describe_frame(opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False, size: int | None = None,
                   length: int | None = None) -> str:
    """Render a frame for the wire view: opcode, FIN, length, first bytes.

    ``payload`` is what the receiver got (inflated, for a compressed frame,
    whose ``size`` on the wire follows); ``length``, when ``payload`` is only
    its start, is the whole payload's.
    """
    name = Opcode(opcode).name if opcode in Opcode._value2member_map_ else hex(opcode)
    if opcode == Opcode.TEXT:
        body = repr(bytes(payload[:60]).decode(errors="replace"))
    else:
        body = bytes(payload[:24]).hex(" ") + (" ..." if len(payload) > 24 else "")
    flags = "" if fin else ", fin=0"
    if rsv1:
        flags += f", compressed to {size} bytes"
    return f"{name} {body} [{len(payload) if length is None else length} bytes{flags}]"


def wire_hex(wire: bytes, size: int) -> str:
    """A frame as it was on the wire, in hex (``-vv``): all of it when its payload
    is short, else its header; either is ready for ``python3 -m common explain``."""
    if size > 125:
        return f"header {wire.hex(' ')} (then {size} payload bytes)"
    return f"frame {wire.hex(' ')}"


class Connection:
    """One open WebSocket; see :class:`common.server.ServerConnection` and
    :class:`common.client.ClientConnection` for the two sides.

    ``max_size`` bounds an incoming message (None: no bound, 1009 beyond it);
    ``max_queue`` bounds how many received messages wait for :meth:`recv`
    before reading from the socket pauses (it resumes once :meth:`recv` has
    taken them down to a quarter of ``max_queue``); ``ping_interval`` and
    ``ping_timeout`` drive keepalive (None disables: the pong must come within
    ``ping_timeout`` of reading that our own full queue did not pause, so a
    slow application never blames the peer); ``close_timeout`` bounds
    each wait of the close handshake; ``write_limit`` is the send buffer size
    beyond which :meth:`send` waits and :func:`~common.broadcast` skips.
    """

    is_client = False

    # Thousands of idle connections are the common case for a server: slots
    # keep each one small. "__dict__" still lets applications tag a connection.
    __slots__ = (
        "reader", "writer", "transport", "loop", "max_queue", "ping_interval", "ping_timeout",
        "close_timeout", "write_limit", "extension", "subprotocol", "request_head",
        "response_headers", "path", "remote_address", "debug", "protocol",
        "_messages", "_recv_waiter", "_receiving", "_reading_paused", "_dropping",
        "_deferred", "_eof_waiter", "_pings", "_timer", "_pauses", "_abort_timer", "_closed", "_reader_task",
        "_reading_inline",
        "stalled_since", "_outgoing", "_outgoing_size", "_answered", "__dict__",
    )

    def __init__(
        self,
        reader: Reader,
        writer: asyncio.StreamWriter,
        *,
        max_size: int | None = 2**20,
        max_queue: int = 16,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        close_timeout: float = 10,
        write_limit: int = 65536,
        extension: Extension | None = None,
        subprotocol: str | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        # A socket stream's transport reads as well as writes (pause_reading).
        self.transport = cast(asyncio.Transport, writer.transport)
        self.loop = asyncio.get_running_loop()
        self.max_queue = max_queue
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.write_limit = write_limit
        # One threshold for everything: send() waits, broadcast() skips and
        # the reading task stops answering pings above the same mark.
        self.transport.set_write_buffer_limits(high=write_limit)
        self.extension = extension
        self.subprotocol = subprotocol
        #: The opening request as it went on the wire (parsed on demand: see request_headers).
        self.request_head = b""
        self.response_headers = Headers()
        self.path = "/"
        self.remote_address = writer.get_extra_info("peername")
        # Decided once: checking the logger for every frame would cost more.
        self.debug = logger.isEnabledFor(logging.DEBUG)
        #: The protocol itself, without I/O: state, close frames, framing.
        self.protocol = Protocol(
            is_client=self.is_client,
            max_size=max_size,
            extension=extension,
            log_in=self._log_frame_in if self.debug else None,
            log_out=self._log_frame_out if self.debug else None,
        )
        # At most max_queue messages (see _receive). A list, not a deque: it
        # is short, and an empty deque costs 760 bytes per connection where a
        # list costs 56.
        self._messages: list[Data] = []
        self._recv_waiter: asyncio.Future[None] | None = None
        # True while a recv() call runs or waits: the application is reading,
        # so the peer's close waits for the messages before it (_after_delivery).
        self._receiving = False
        # True while the queue is full: the transport is paused and the
        # receiver holds what was read but not parsed yet.
        self._reading_paused = False
        # True once a message was dropped after our close: later ones are
        # dropped too, so that what recv() returns has no gap.
        self._dropping = False
        # What ends the connection once recv() has returned the messages
        # that came before it: answering the peer's close, or failing.
        self._deferred: Callable[[], None] | None = None
        # Set while the peer's EOF waits for the application (see _let_reader_answer).
        self._eof_waiter: asyncio.Future[None] | None = None
        self._pings: dict[bytes, tuple[asyncio.Future[float], float]] = {}
        self._timer: asyncio.TimerHandle | None = None  # keepalive
        # How many times reading paused: a pong deadline that saw a pause
        # starts again (see _keepalive_expired).
        self._pauses = 0
        # Aborts the TCP connection if the close handshake has not ended in
        # time; once reading has ended, the reading task takes over (_end).
        self._abort_timer: asyncio.TimerHandle | None = None
        self._closed: asyncio.Future[None] = self.loop.create_future()
        # The reading task, None while recv() reads (see start); held here
        # because the loop only holds tasks weakly.
        self._reader_task: asyncio.Task[None] | None = None
        self._reading_inline = False
        #: When broadcast() first found the send buffer full; None if it is not.
        self.stalled_since: float | None = None
        # Frames written during one turn of the event loop, sent together.
        self._outgoing: list[bytes] | None = None
        self._outgoing_size = 0
        # Whether the last read made us answer a ping (see _read_loop).
        self._answered = False

    # ----------------------------------------------------------------- public

    @property
    def state(self) -> State:
        """OPEN, CLOSING (a close frame sent) or CLOSED (the TCP connection ended)."""
        return self.protocol.state

    @property
    def close_sent(self) -> Close | None:
        """The close frame this side sent, if any."""
        return self.protocol.close_sent

    @property
    def close_rcvd(self) -> Close | None:
        """The close frame the peer sent, if any."""
        return self.protocol.close_rcvd

    @property
    def close_rcvd_then_sent(self) -> bool | None:
        """True if the peer's close came first, False if ours did, None while there is none."""
        return self.protocol.close_rcvd_then_sent

    @property
    def request_headers(self) -> Headers:
        """The headers of the opening request (parsed again on each access:
        keeping only the raw bytes saves memory on every idle connection)."""
        return parse_request(self.request_head).headers if self.request_head else Headers()

    @property
    def peer(self) -> str:
        """The peer's address and port, as the wire view names this connection."""
        return format_address(self.remote_address)

    @property
    def close_code(self) -> int | None:
        """The code of the close frame received, 1006 if none, None while open."""
        if self.state is not State.CLOSED:
            return None
        return self.close_rcvd.code if self.close_rcvd else CloseCode.ABNORMAL_CLOSURE

    @property
    def close_reason(self) -> str | None:
        if self.state is not State.CLOSED:
            return None
        return self.close_rcvd.reason if self.close_rcvd else ""

    async def recv(self) -> Data:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        Raises :class:`ConnectionClosedOK` after a normal close and
        :class:`ConnectionClosedError` otherwise, once every message received
        before the close was returned.
        """
        # One coroutine, not two: every idle connection holds this frame.
        self._receiving = True
        try:
            while True:
                if self._messages:
                    message = self._messages.pop(0)
                    if self._reading_paused and len(self._messages) <= self.max_queue >> 2:
                        self._resume_reading()
                    return message
                # Everything that came before the close, the bad frame or the
                # peer's EOF was returned: what was waiting for that goes on.
                if self._deferred is not None:
                    self._run_deferred()
                if self._eof_waiter is not None and not self._eof_waiter.done():
                    self._eof_waiter.set_result(None)
                if self.protocol.state is State.CLOSED:
                    raise self.protocol.closed_exception()
                busy = self._recv_waiter is not None or self._reading_inline
                if self.protocol.receiving_done:
                    # Nothing more to read but the end of the connection: the
                    # reading task sees to it, and wakes this recv() when it
                    # comes (or every waiter, through wait_closed()).
                    self._keep_reading()
                    if busy:
                        await self.wait_closed()
                        continue
                elif busy:
                    raise RuntimeError("recv() called while another coroutine is already waiting for a message")
                # About to wait: what the handler wrote meanwhile goes out now.
                self._flush()
                if self._reader_task is None:
                    # Reading is this recv()'s (see start): it awaits the
                    # socket itself, here rather than in a coroutine of its
                    # own, which would cost one more per message.
                    self._reading_inline = True
                    try:
                        data = await self.reader.read(READ_SIZE)
                    except (ConnectionError, OSError):
                        data = b""  # the stream keeps its error: the reading task meets it again
                    except BaseException:
                        # Cancelled, maybe just as bytes came, which the
                        # stream keeps: a reading task reads them.
                        self._reading_inline = False
                        self._keep_reading()
                        raise
                    self._reading_inline = False
                    self._received_inline(data)
                    continue
                self._recv_waiter = self.loop.create_future()
                try:
                    await self._recv_waiter
                finally:
                    self._recv_waiter = None
        finally:
            self._receiving = False

    def __aiter__(self) -> AsyncIterator[Data]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Data]:
        """Yield messages until the connection closes; quiet on 1000/1001."""
        try:
            while True:
                yield await self.recv()
        except ConnectionClosedOK:
            return

    async def send(self, message: Data | Iterable[Data]) -> None:
        """Send a text (``str``) or binary (``bytes``) message.

        An iterable of ``str`` or of ``bytes`` is sent as one fragmented
        message, one frame per item (§5.4). Waits only while the send buffer
        is over ``write_limit``. Raises :class:`ConnectionClosed` when closed.
        """
        protocol = self.protocol
        if protocol.state is not State.OPEN:
            await self._raise_closed()
        if isinstance(message, str):
            chunks = protocol.send_data(Opcode.TEXT, message.encode())
        elif isinstance(message, (bytes, bytearray, memoryview)):
            chunks = protocol.send_data(Opcode.BINARY, bytes(message))
        elif isinstance(message, Iterable):
            chunks = protocol.send_fragments(message)
        else:
            raise TypeError(f"cannot send {type(message).__name__}: expected str, bytes or an iterable of them")
        if len(chunks) == 1:  # one small frame: the common case
            self._write(chunks[0])
        else:
            self._write_all(chunks)
        if self.buffered_amount() > self.write_limit:
            self._flush()
            try:
                await self.writer.drain()
            except OSError:  # ConnectionError, or whatever error the transport died of
                await self._raise_closed()
            if self.transport.is_closing() and self.state is not State.OPEN:
                # Woken because the connection ended (an abort wakes drain()
                # without an error): the message may never have left.
                await self._raise_closed()

    async def ping(self, data: Data | None = None) -> asyncio.Future[float]:
        """Send a ping (§5.5.2); return a future resolved by the matching pong.

        The future's result is the round-trip time in seconds. ``data``
        defaults to 4 random bytes. A pong also acknowledges earlier pings.
        """
        if self.state is not State.OPEN:
            await self._raise_closed()
        payload = data.encode() if isinstance(data, str) else os.urandom(4) if data is None else bytes(data)
        check_control_payload(payload)
        if payload in self._pings:
            raise RuntimeError("already waiting for a pong with the same data")
        waiter: asyncio.Future[float] = self.loop.create_future()
        self._pings[payload] = (waiter, time.monotonic())
        self._write_all(self.protocol.send_ping(payload))
        return waiter

    async def pong(self, data: Data = b"") -> None:
        """Send an unsolicited pong: a unidirectional heartbeat (§5.5.3)."""
        if self.state is not State.OPEN:
            await self._raise_closed()
        payload = data.encode() if isinstance(data, str) else bytes(data)
        self._write_all(self.protocol.send_pong(payload))

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Run the close handshake (§7.1.2) and wait for the TCP connection to end.

        Each wait is bounded by ``close_timeout``, after which the connection
        is aborted. Closing a closed connection does nothing. ``code`` must
        be one that may be sent (§7.4) and ``reason`` at most 123 bytes in
        UTF-8, so that the frame fits a control frame's 125 bytes.
        """
        if not is_valid_close_code(code):
            raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
        check_control_payload(reason.encode(), limit=123)
        if self.protocol.state is State.OPEN:
            self._send_close(self.protocol.send_close(Close(code, reason)))
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed."""
        self._keep_reading()  # the reading task sees the connection to its end
        # Shielded: cancelling one waiter must not cancel the future that
        # every waiter shares. Not when it is done: a shield costs a future
        # and two callbacks, on every connection's way out.
        if not self._closed.done():
            await asyncio.shield(self._closed)

    # ------------------------------------------------------------ reading side

    # Who reads the socket. A handler waiting in recv() reads it itself
    # (see recv): the bytes then reach the handler's task in the turn of
    # the loop they arrive in, where handing them over from a reading task
    # costs a turn, a future and a task switch per message, about a fifth of
    # a small echo's round trip. Whenever bytes come in while no recv() is
    # reading (the handler is busy, only sends, or is closing), the stream's
    # Reader says so (streams.Reader.on_arrival) and a reading task reads
    # them (_read_loop), so that pings are answered and the peer's close is
    # seen all the same; it hands reading back when it gives a message to a
    # waiting recv(). Exactly one of them reads at a time: _reader_task is
    # None while reading is the handler's, and _reading_inline is True while
    # its recv() awaits the socket.

    def start(self) -> None:
        """Start reading; called by the server or client after the handshake.

        The handler runs next in the same task: if it calls recv() at once,
        recv() reads, and no reading task is made (nor held by an idle
        connection) unless bytes come while the handler is elsewhere."""
        if self.debug:
            logger.debug("%s = connection is OPEN", self.peer)
        self.reader.on_arrival = self._keep_reading
        # Bytes may have come with the handshake, before the reader said so.
        self.loop.call_soon(self._keep_reading)
        if self.ping_interval is not None:
            self._timer = self.loop.call_later(self.ping_interval, self._keepalive)

    def _keep_reading(self) -> None:
        """Make sure that something reads: a reading task, unless recv() does."""
        if self._reader_task is None and not self._reading_inline and self.protocol.state is not State.CLOSED:
            self._reader_task = self.loop.create_task(self._read_loop())

    def _received_inline(self, data: bytes) -> None:
        """Parse what recv() read itself (b"": the stream ended or failed)."""
        if not data:
            # The peer's EOF (the stream returns it again) or an error: the
            # reading task ends the connection, as it always does.
            self._keep_reading()
            return
        self._receive(data)
        if self._answered or self.protocol.state is not State.OPEN or self.protocol.receiving_done:
            # Pongs that may have to drain, or a close handshake to see to its end.
            self._keep_reading()

    async def _read_loop(self) -> None:
        read = self.reader.read
        deadline: float | None = None
        ended = True
        try:
            while True:
                if self._answered:
                    self._answered = False
                    if self.buffered_amount() > self.write_limit:
                        # The peer sends pings but does not read our pongs:
                        # read nothing more until they drain, or the pongs
                        # would pile up without bound. TCP then pushes back
                        # on the peer; keepalive and close_timeout still end
                        # the connection if it never reads again.
                        self._flush()
                        await self.writer.drain()
                data = await read(READ_SIZE)
                if not data:
                    if self.debug:
                        self._log_tcp_end()
                    deadline = self.loop.time() + self.close_timeout
                    await self._let_reader_answer(deadline)
                    break
                handing_over = self._recv_waiter is not None
                self._receive(data)
                if (
                    handing_over and self._messages and not self._answered and not self._reading_paused
                    and self.protocol.state is State.OPEN and not self.protocol.receiving_done
                ):
                    # A recv() waits for what was just queued: the handler
                    # reads next (see start).
                    ended = False
                    self._reader_task = None
                    return
        except (ConnectionError, OSError) as exc:
            if self.debug:
                logger.debug("%s ! connection lost: %s", self.peer, exc)
        finally:
            if ended:
                self._connection_lost()
                await self._end(deadline)

    async def _let_reader_answer(self, deadline: float) -> None:
        """The peer sent EOF: let a waiting recv() take what came before it.

        A peer may half-close (shutdown(SHUT_WR)) right after its last
        messages and still read: our side stays open until the application
        has taken them all and asks for more, so that it can answer them,
        until ``deadline``. A handler that is not reading does not hold it.
        """
        if self._messages and self.state is State.OPEN and self._receiving:
            self._eof_waiter = self.loop.create_future()
            await asyncio.wait([self._eof_waiter], timeout=max(0.0, deadline - self.loop.time()))

    def _receive(self, data: bytes) -> None:
        """Parse ``data`` and act on its events, as far as the queue has room.

        At most ``max_queue`` messages wait for recv(): once the queue is
        full, the receiver keeps the rest of what was read unparsed and
        reading pauses (backpressure, so that TCP pushes back on the peer).
        It resumes only once recv() has taken the queue down to a quarter of
        ``max_queue``, the low mark, and then parses a batch: pausing and
        resuming once per message would cost a trip through the parser, the
        transport's pause and its resume for every message of a peer that
        keeps the queue full. Once our close frame is out, the
        application has stopped reading: everything is parsed so that the
        peer's close is seen, and messages beyond the queue are dropped, with
        every one after them (the application gets a prefix of what was sent).
        """
        protocol = self.protocol
        open_ = protocol.state is State.OPEN
        room = self.max_queue - len(self._messages) if open_ else None
        messages = self._messages
        for event in protocol.receive_data(data, room):
            if isinstance(event, (str, bytes)):
                if open_ or (len(messages) < self.max_queue and not self._dropping):
                    messages.append(event)
                else:
                    self._dropping = True
                    if self.debug:
                        logger.debug("%s ! message dropped: received after our close, with the queue full", self.peer)
            elif isinstance(event, Ping):
                # The protocol queued the pong: it goes out before anything this read leads to.
                pongs = protocol.data_to_send()
                if pongs:
                    self._write_all(pongs)
                    self._answered = True
            elif isinstance(event, Pong):
                self._acknowledge_pings(event.data)
            elif isinstance(event, Close):
                self._close_received()
            else:
                self._protocol_error(event)
        if messages:
            waiter = self._recv_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if len(messages) >= self.max_queue and protocol.state is State.OPEN and not self._reading_paused:
                # The loop still awaits read(), which wakes up if the
                # connection drops meanwhile.
                self._reading_paused = True
                self._pauses += 1
                self.transport.pause_reading()

    def _resume_reading(self) -> None:
        """Parse what was held back, then read again, as far as the queue has room."""
        self._reading_paused = False
        if self.protocol.pending:
            self._receive(b"")  # which pauses again if the batch fills the queue
        if not self._reading_paused and not self.transport.is_closing():
            self.transport.resume_reading()

    def _acknowledge_pings(self, payload: bytes) -> None:
        if payload not in self._pings:
            return  # unsolicited pong: a heartbeat, nothing to do (§5.5.3)
        now = time.monotonic()
        # A pong acknowledges its ping and every ping sent before it.
        for data in list(self._pings):
            waiter, sent_at = self._pings.pop(data)
            if not waiter.done():
                waiter.set_result(now - sent_at)
            if data == payload:
                break

    def _close_received(self) -> None:
        """The peer started or answered the close handshake (§5.5.1, §7.1.5)."""
        if self.protocol.state is State.OPEN:
            self._after_delivery(self._answer_close)
        else:
            self._answer_close()

    def _answer_close(self) -> None:
        if self.protocol.state is State.OPEN:
            self._send_close(self.protocol.answer_close())
        elif self.protocol.close_transport:
            # §7.1.1: the server closes the TCP connection first.
            self._flush()
            self.transport.close()

    def _protocol_error(self, exc: ProtocolError) -> None:
        """Fail the connection (§7.1.7), after earlier messages were delivered."""
        if self.debug:
            logger.debug("%s ! %s", self.peer, exc)
        self._after_delivery(lambda: self._fail(exc.code, str(exc)))

    def _after_delivery(self, action: Callable[[], None]) -> None:
        """Run ``action`` once recv() has returned every message queued now.

        The peer's close or a bad frame ends the connection, but when a
        recv() is waiting, the messages that arrived before it are delivered
        first and the application may answer them (the strict reading of the
        conformance suites: frames take effect in order). ``close_timeout``
        bounds the wait. A handler that is not reading (one that only sends,
        or is busy elsewhere) does not hold the close back: it gets the
        messages from recv() all the same, but cannot answer them.
        """
        if not self._messages or not self._receiving:
            action()
            return
        self._deferred = action
        self.loop.call_later(self.close_timeout, self._run_deferred)

    def _run_deferred(self) -> None:
        action, self._deferred = self._deferred, None
        if action is not None:
            action()

    def _fail(self, code: int, reason: str) -> None:
        frames = self.protocol.fail(code, reason)
        if frames:
            self._send_close(frames)
            if self.protocol.half_close:
                self._half_close()

    def _half_close(self) -> None:
        """Server side: end our direction now, then read until the peer leaves.

        Closing outright with unread data in the receive buffer makes the
        kernel send a reset, which can destroy the close frame in flight.
        """
        self._flush()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()

    async def _end(self, deadline: float | None) -> None:
        """Wait for the transport to be gone; abort it at ``deadline``.

        Closing a transport waits for its buffer to drain, which a peer that
        does not read would make last forever. ``deadline`` is
        ``close_timeout`` after the peer's EOF, or after our close frame if
        that came first (None: ``close_timeout`` from now).
        """
        timer = self._abort_timer
        if timer is None or (deadline is not None and deadline < timer.when()):
            if timer is not None:
                timer.cancel()
            if deadline is None:
                deadline = self.loop.time() + self.close_timeout
            timer = self._abort_timer = self.loop.call_at(deadline, self._abort)
        # The abort ends the wait, if nothing else does: one timer, rather
        # than a timeout around a shielded wait (every wait_closed() shares
        # one future, which a timeout would cancel for the other waiters).
        try:
            await self.writer.wait_closed()
        except Exception:  # what the connection died of; _read_loop has seen it already
            pass
        finally:
            timer.cancel()

    def _connection_lost(self) -> None:
        """Reading ended: the peer's EOF, or the connection broke."""
        self.protocol.receive_eof()
        if self.debug:
            logger.debug("%s = connection is CLOSED: %s", self.peer, self.protocol.describe_close())
        if self._timer is not None:
            self._timer.cancel()
        self.reader.on_arrival = None  # which held this connection
        if not self.transport.is_closing():
            # The peer's close and its FIN may come in one read: the close
            # frame we queued in answer must still go out before ours.
            self._flush()
        self._outgoing = None
        self._outgoing_size = 0
        self.transport.close()
        for waiter, _ in self._pings.values():
            if not waiter.done():
                waiter.set_exception(self.protocol.closed_exception())
                waiter.exception()  # nobody may be awaiting it: mark it retrieved
        self._pings.clear()
        if self._recv_waiter is not None and not self._recv_waiter.done():
            self._recv_waiter.set_result(None)
        if not self._closed.done():
            self._closed.set_result(None)

    # ------------------------------------------------------------ writing side

    def _write_all(self, chunks: list[bytes]) -> None:
        """Write what the protocol produced, in order: small pieces may wait to
        be joined (see _write), a large payload goes out at once as it is."""
        for chunk in chunks:
            if len(chunk) <= _JOIN_LIMIT:
                self._write(chunk)
            else:
                self._flush()
                self.transport.write(chunk)

    def _write(self, data: bytes) -> None:
        """Queue bytes for the socket until the end of this loop iteration.

        Only while received messages wait for the application: a handler
        answering 32 pipelined messages then makes one send() system call
        instead of 32, and recv() flushes before it waits. With nothing else
        to answer, the write goes out at once, so a request/response exchange
        gains no latency and the loop no extra turn.
        """
        if self._outgoing is None:
            if not self._messages:
                self.transport.write(data)
                return
            self._outgoing = [data]
            self.loop.call_soon(self._flush)
        else:
            self._outgoing.append(data)
        self._outgoing_size += len(data)

    def write_now(self, data: bytes) -> None:
        """Write a frame at once, after anything queued, without waiting for the
        buffer to drain: :func:`~common.broadcast` writes to thousands of
        connections and schedules no flush for each."""
        if self._outgoing is not None:
            self._flush()
        self.transport.write(data)

    def _flush(self) -> None:
        outgoing = self._outgoing
        if outgoing is not None:
            self._outgoing = None
            self._outgoing_size = 0
            self.transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def buffered_amount(self) -> int:
        """Bytes written but not yet handed to the kernel (like the browser's
        ``WebSocket.bufferedAmount``): what ``write_limit`` bounds."""
        try:
            unsent = self.transport.get_write_buffer_size()
        except AttributeError:  # a TLS transport whose connection is lost (CPython 3.11 to 3.13)
            unsent = 0
        return self._outgoing_size + unsent

    def _send_close(self, frames: list[bytes]) -> None:
        """The protocol made our close frame (state CLOSING): send it, and bound the rest."""
        if self.debug:
            logger.debug("%s = connection is CLOSING", self.peer)
        if self._reading_paused:
            # Reading must go on to see the peer's close, whatever is queued.
            self._resume_reading()
        self._keep_reading()
        if self._eof_waiter is not None and not self._eof_waiter.done():
            self._eof_waiter.set_result(None)  # the peer sent EOF already: no close will come
        self._write_all(frames)
        if self._timer is not None:
            self._timer.cancel()
        # Bound the rest of the handshake: after close_timeout, abort.
        self._abort_timer = self.loop.call_later(self.close_timeout, self._abort)
        if self.protocol.close_rcvd is not None:
            # The peer's close came first, its answer deferred: this close
            # answers it, and the handshake is complete.
            self._deferred = None
            if self.protocol.close_transport:
                self._flush()
                self.transport.close()

    def _abort(self) -> None:
        if self.debug:
            logger.debug("%s ! the connection did not end within close_timeout; aborting it", self.peer)
        self.transport.abort()

    def _keepalive(self) -> None:
        """Ping every ping_interval; close with 1011 if no pong in ping_timeout."""
        interval = self.ping_interval
        if self.protocol.state is not State.OPEN or interval is None:
            return
        payload = struct.pack("!I", int(time.monotonic() * 1000) & 0xFFFFFFFF)
        waiter: asyncio.Future[float] = self.loop.create_future()
        self._pings[payload] = (waiter, time.monotonic())
        self._write_all(self.protocol.send_ping(payload))
        if self.debug:
            logger.debug("%s %% sent keepalive ping", self.peer)
        if self.ping_timeout is not None:
            self._await_pong(waiter, self.ping_timeout)
        else:
            self._timer = self.loop.call_later(interval, self._keepalive)

    def _await_pong(self, waiter: asyncio.Future[float], timeout: float) -> None:
        self._timer = self.loop.call_later(timeout, self._keepalive_expired, waiter, self._pauses)

    def _keepalive_expired(self, waiter: asyncio.Future[float], pauses: int) -> None:
        interval, timeout = self.ping_interval, self.ping_timeout
        if self.protocol.state is not State.OPEN or interval is None or timeout is None:
            return
        if waiter.done():
            delay = max(0.0, interval - timeout)
            self._timer = self.loop.call_later(delay, self._keepalive)
            return
        if self._reading_paused or self._pauses != pauses:
            # Our own backpressure held reading back during the wait: the pong
            # may be among what we have not read yet, so the peer is not to
            # blame. It gets ping_timeout of reading that was never paused.
            self._await_pong(waiter, timeout)
            return
        logger.info("%s: no pong within %s s; closing the connection", self.peer, self.ping_timeout)
        self._fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")

    # ----------------------------------------------------------------- helpers

    def _log_frame_in(self, opcode: int, fin: bool, rsv1: bool, payload: bytes, size: int, wire: bytes) -> None:
        # For a compressed frame, payload is inflated and size is on the wire.
        logger.debug("%s < %s", self.peer, describe_frame(opcode, payload, fin, rsv1, size))
        if logger.isEnabledFor(HEADER_BYTES):
            logger.log(HEADER_BYTES, "%s     %s", self.peer, wire_hex(wire, size))

    def _log_frame_out(self, opcode: int, fin: bool, rsv1: bool, payload: bytes, size: int, wire: bytes) -> None:
        logger.debug("%s > %s", self.peer, describe_frame(opcode, payload, fin, rsv1, size))
        if logger.isEnabledFor(HEADER_BYTES):
            logger.log(HEADER_BYTES, "%s     %s", self.peer, wire_hex(wire, size))

    def _log_tcp_end(self) -> None:
        """Who closed TCP first: this side (the transport is closing), or the peer (its FIN came)."""
        us, peer = self.protocol.sides
        if self.transport.is_closing():
            logger.debug("%s = the %s closed TCP first", self.peer, us)
        elif self.protocol.half_close:
            logger.debug("%s = the %s ended its side of TCP first; the %s closed TCP", self.peer, us, peer)
        else:
            logger.debug("%s = the %s closed TCP first", self.peer, peer)

    async def _raise_closed(self) -> None:
        """Raise ConnectionClosed once the closing connection has closed."""
        await self.wait_closed()
        raise self.protocol.closed_exception()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.remote_address} {self.state.name}>"


def log_handshake(peer: str, request: bytes, response: bytes, outgoing: bool, log: logging.Logger = logger) -> None:
    """The wire view of the opening handshake: its request line and status line,
    and with ``-vv`` (:data:`HEADER_BYTES`) every header line. ``outgoing``: we sent the request.
    An empty ``response`` (none came) is left out; ``log`` is the logger to write to."""
    request_mark, response_mark = (">", "<") if outgoing else ("<", ">")
    for mark, head in ((request_mark, request), (response_mark, response)):
        if not head:
            continue
        first, *headers = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        log.debug("%s %s %s", peer, mark, first)
        for line in headers:
            log.log(HEADER_BYTES, "%s     %s", peer, line)


def format_address(address: Any) -> str:
    """``host:port`` for an IPv4 peer, ``[host]:port`` for IPv6, as in a URI."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
        return f"{host}:{address[1]}"
    return str(address)

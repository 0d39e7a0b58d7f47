"""The WebSocket protocol of one connection, without any I/O (RFC 6455 §5-§7).

:class:`Protocol` is the state machine: bytes in (:meth:`Protocol.receive_data`,
:meth:`Protocol.receive_eof`), typed events out, and every action (send a
message, a ping, a pong, a close; fail the connection; answer the peer's
close) returns the bytes to write, in order. It owns the state (OPEN,
CLOSING, CLOSED), the close frames sent and received and which came first,
compression and, on the client side, masking. What it cannot do without I/O
it says in properties the adapter reads: :attr:`Protocol.close_transport`
(the close handshake is complete and this side closes TCP first),
:attr:`Protocol.half_close` (end our direction: the server failed the
connection); once the state is CLOSING, the adapter bounds the rest of the
handshake with a timeout and aborts TCP after it. When to answer the peer's
close is the adapter's call too: it answers once the application has taken
the messages that came before it, which only the adapter can know. :mod:`common.connection` is the asyncio adapter around it
(who reads the socket, message queue, backpressure, writing and draining, timers).

:class:`Receiver`, underneath, is fed whatever the socket delivered and returns the events
it completes, in the order they arrived on the wire: whole messages (frames
reassembled, UTF-8 checked, decompressed), pings, pongs and the peer's close.
The caller may ask for at most so many messages per call (``max_messages``):
what lies beyond waits in the buffer, so that a full queue stops the parsing
too. When the peer breaks the protocol, the events before the bad frame are
still returned, followed by the exception that says which close code to send:
the application gets to see (and answer) everything that came first (RFC 6455
§7.1.7 leaves the order open; conformance suites grade this as "strict").

Unit tests drive both with plain bytes; :mod:`common.connection` drives them
with what an asyncio stream reads.
"""

from __future__ import annotations

import codecs
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol as TypingProtocol
from typing import Union, cast

from .exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK, InvalidPayload, PayloadTooBig, ProtocolError
from .frames import Close, CloseCode, apply_mask, encode_frame_parts, encode_header

__all__ = ["Protocol", "State", "Ping", "Pong", "ProtocolEvent", "Receiver", "Event", "Extension", "COMPRESSION_THRESHOLD", "check_control_payload"]

# Plain ints rather than the Opcode enum: they are compared for every frame.
_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: An event is ``(opcode, payload)``: ``(1, str)`` for a text message,
#: ``(2, bytes)`` for binary, ``(9, bytes)`` ping, ``(10, bytes)`` pong,
#: ``(8, Close)`` for the peer's close, or ``(None, ProtocolError)`` last of all
#: when the peer broke the protocol.
Event = tuple[Union[int, None], Union[str, bytes, Close, ProtocolError]]

# Payloads up to this size are copied out of the buffer the simple way.
_SMALL = 4096

# In a message being reassembled, a piece of at least this many bytes is
# kept as one object (40 to 80 bytes of overhead, under 16 % of the piece,
# twice that if small pieces came just before it); smaller pieces are
# gathered into one bytearray, so that they cost their size (empty ones
# nothing) however many the peer sends. Small pieces of text are decoded
# twice, to validate them at once and to keep them (see _add): measured on
# 1 MiB of non-ASCII text in fragments just under this size, 10-25 % slower
# than decoding once; for ASCII, or above this size, within a few %.
_KEEP = 512

_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


class Extension(TypingProtocol):
    """A negotiated extension (RFC 6455 §9), as the protocol uses it.

    Only permessage-deflate exists in practice (:mod:`common.deflate`); it
    claims the RSV1 bit. It works on whole messages when sending and on the
    frames of a message when receiving.
    """

    @property
    def shared_key(self) -> object | None:
        """Equal for two connections whose :meth:`encode` gives equal output for
        equal input, so that :func:`~common.broadcast` encodes once for both;
        None when the output depends on this connection's history."""
        ...

    def encode(self, payload: bytes) -> bytes:
        """Transform one whole outgoing message's payload (sent with RSV1 set)."""
        ...

    def decode(self, payload: bytes, fin: bool, max_size: int | None) -> bytes:
        """Undo the extension on one frame's payload; bound the output."""
        ...


class Receiver:
    """Parse frames and assemble messages for one side of a connection.

    ``expect_masked`` is True on the server, which MUST fail the connection
    when a client frame is not masked, and False on the client, which MUST
    fail it when a server frame is masked (§5.1). ``max_size`` bounds a whole
    message (None: no bound); ``extension`` undoes permessage-deflate;
    ``log``, when given, is called with every complete frame (the wire view):
    ``log(opcode, fin, compressed, payload, size, wire)``, where ``size`` is
    the payload's size on the wire and ``wire`` the frame's bytes as they
    came (masked, compressed): all of them when ``size`` is at most 125, else
    the header alone; a compressed frame is logged once inflated, ``payload``
    being what it inflated to.
    """

    __slots__ = (
        "expect_masked", "log", "max_size", "extension", "buffer", "opcode", "compressed",
        "parts", "small", "size", "decoder", "partial_done", "done", "unparsed", "room", "controls", "wire",
    )

    def __init__(
        self,
        *,
        expect_masked: bool,
        max_size: int | None = 2**20,
        extension: Extension | None = None,
        log: Callable[..., None] | None = None,
    ) -> None:
        self.expect_masked = expect_masked
        self.log = log
        self.max_size = max_size
        self.extension = extension
        self.buffer = bytearray()
        # The message being reassembled: its opcode (None when between
        # messages), its large pieces (text decoded, 1 to 4 bytes a
        # character), the small pieces that came after them (text not decoded
        # yet, see _add) and its size in bytes, which max_size bounds.
        self.opcode: int | None = None
        self.compressed = False
        self.parts: list[str | bytes | bytearray] = []
        self.small = bytearray()
        self.size = 0
        self.decoder: codecs.IncrementalDecoder | None = None
        # How much of an incomplete text frame's payload was already decoded,
        # so that invalid UTF-8 fails before the rest of the frame arrives.
        self.partial_done = 0
        self.done = False  # after a close frame or an error, nothing counts
        # How many more messages the current feed() may return; counted down
        # by _data, from -1 it never reaches 0 (no limit).
        self.room = -1
        self.unparsed = 0  # see pending
        #: How many of the last feed()'s events are not messages (control frames, an error).
        self.controls = 0
        self.wire = b""  # the last frame as it came, kept only for log

    @property
    def pending(self) -> int:
        """How many buffered bytes :meth:`feed` left unparsed at ``max_messages``.

        Non-zero: ``feed(b"", n)`` parses them and may return more events (or
        none, if they turn out to be only the start of a frame). Zero: the
        last ``feed`` parsed as far as the buffered bytes allow, or the peer
        is done (closed or broke the protocol); the start of a frame may
        still be buffered, but only more data can complete it.
        """
        return self.unparsed

    def feed(self, data: bytes, max_messages: int | None = None) -> list[Event]:
        """Add ``data`` and return the events it completes, in order.

        Frames are parsed until no complete frame remains or, if
        ``max_messages`` is given, until the events include that many
        messages (text or binary; control frames and a protocol error are
        events, not messages), whichever comes first. None: no limit; 0:
        buffer ``data``, parse nothing. Bytes left unparsed stay buffered
        (see :attr:`pending`); a later call, ``feed(b"", n)`` if no data came
        meanwhile, resumes with them. This lets a connection whose queue is
        nearly full take only what fits from one large read.
        """
        if max_messages is not None and max_messages < 0:
            raise ValueError(f"max_messages must be None or >= 0, not {max_messages}")
        if self.done:
            return []
        buf = self.buffer
        buf += data
        events: list[Event] = []
        pos = 0
        # A counter that _data decrements costs ~1 % per small frame; counting
        # messages among the events after every frame here cost ~8 %.
        self.room = -1 if max_messages is None else max_messages
        self.controls = 0
        try:
            # A frame's first two bytes, at least, before a call that may parse it.
            while self.room and not self.done and len(buf) - pos >= 2:
                consumed = self._parse_frame(buf, pos, events)
                if not consumed:
                    break
                pos += consumed
        except ProtocolError as exc:
            self.done = True
            self.controls += 1
            events.append((None, exc))
        # One memmove per read instead of one per frame.
        del buf[:pos]
        # room is 0 only when parsing stopped at max_messages (a close frame
        # or an error ends it with room left): the rest is unparsed.
        self.unparsed = 0 if self.room else len(buf)
        return events

    def _parse_frame(self, buf: bytearray, pos: int, events: list[Event]) -> int:
        """Handle the frame at ``pos``; return its size, or 0 if incomplete."""
        available = len(buf) - pos
        if available < 2:
            return 0
        b0 = buf[pos]
        b1 = buf[pos + 1]
        opcode = b0 & 0x0F
        length = b1 & 0x7F
        header = 2
        if length == 126:
            if available < 4:
                return 0
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            header = 4
        elif length == 127:
            if available < 10:
                return 0
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            header = 10
            if length >> 63:
                raise ProtocolError("64-bit payload length with the top bit set (§5.2)")
        masked = b1 & 0x80
        self._check_header(b0, opcode, length, masked)
        if masked:
            header += 4
        if available < header + length:
            if available > header and (
                (opcode == _TEXT and not b0 & 0x40)
                or (opcode == _CONT and self.opcode == _TEXT and not self.compressed)
            ):
                self._decode_partial_text(buf, pos, header, masked, available, opcode)
            return 0
        start = pos + header
        end = start + length
        if length <= _SMALL:
            # Slicing a bytearray copies twice, yet beats a memoryview when small.
            payload = bytes(buf[start:end])
            if masked:
                payload = apply_mask(payload, bytes(buf[start - 4 : start]))
        else:
            # One copy (or none before masking) for large payloads: each
            # fresh megabyte costs page faults, not just a memcpy.
            with memoryview(buf) as view:
                if masked:
                    payload = apply_mask(view[start:end], bytes(buf[start - 4 : start]))
                else:
                    payload = bytes(view[start:end])
        fin = b0 & 0x80
        if self.log is not None:
            self.wire = bytes(buf[pos : end if length <= 125 else start])
            if not (b0 & 0x40 or (opcode == _CONT and self.compressed)):  # compressed frames: once inflated
                self.log(opcode, bool(fin), False, payload, length, self.wire)
        if opcode >= _CLOSE:
            self._control(opcode, payload, events)
        else:
            self._data(opcode, fin, b0 & 0x40, payload, events)
        return header + length

    def _check_header(self, b0: int, opcode: int, length: int, masked: int) -> None:
        """Reject a bad frame as soon as its header is known (§5.2, §5.4, §5.5)."""
        if b0 & 0x30 or (b0 & 0x40 and self.extension is None):
            raise ProtocolError("reserved bits set without a negotiated extension (§5.2)")
        if b0 & 0x40 and opcode >= _CLOSE:
            raise ProtocolError(
                "reserved bits set on a control frame: control frames cannot be compressed (RFC 7692 §6.1)"
            )
        if bool(masked) != self.expect_masked:
            if self.expect_masked:
                raise ProtocolError("client frames must be masked (§5.1)")
            raise ProtocolError("server frames must not be masked (§5.1)")
        if opcode >= _CLOSE:
            if opcode > _PONG:
                raise ProtocolError(f"reserved control opcode {opcode:#x} (§5.2)")
            if not b0 & 0x80:
                raise ProtocolError("fragmented control frame (§5.5)")
            if length > 125:
                raise ProtocolError("control frame payload over 125 bytes (§5.5)")
            return
        if opcode > _BINARY:
            raise ProtocolError(f"reserved data opcode {opcode:#x} (§5.2)")
        if opcode == _CONT:
            if self.opcode is None:
                raise ProtocolError("continuation frame with no message to continue (§5.4)")
            if b0 & 0x40:
                raise ProtocolError("RSV1 set on a continuation frame (RFC 7692 §6)")
        elif self.opcode is not None and not self.partial_done:
            raise ProtocolError("new data frame inside a fragmented message (§5.4)")
        max_size = self.max_size
        compressed = self.compressed if opcode == _CONT else b0 & 0x40
        # A compressed frame's length says nothing of the message's size:
        # the extension bounds what it inflates instead.
        if max_size is not None and not compressed and self.size + length > max_size:
            raise PayloadTooBig(
                f"message of {self.size + length} bytes or more exceeds max_size={max_size} (§10.4)"
            )
        # Its own length is bounded too, or the peer could make us buffer
        # gigabytes before inflating any. DEFLATE never needs much more than
        # the data: stored blocks add 5 bytes per 64 KiB, fixed Huffman codes
        # at most 9 bits per byte; hence an eighth more, and some slack.
        if max_size is not None and compressed and length > max_size + (max_size >> 3) + 1024:
            raise PayloadTooBig(f"compressed frame of {length} bytes exceeds max_size={max_size} (§10.4)")

    def _decode_partial_text(
        self, buf: bytearray, pos: int, header: int, masked: int, available: int, opcode: int
    ) -> None:
        """Validate the UTF-8 of a text frame's payload received so far (§8.1).

        A payload that is invalid early must fail the connection now, not once
        megabytes later the frame is complete ("fail fast").
        """
        start = pos + header + self.partial_done
        chunk = bytes(buf[start : pos + available])
        if not chunk:
            return
        if masked:
            offset = self.partial_done % 4
            key = bytes(buf[pos + header - 4 : pos + header])
            chunk = apply_mask(chunk, key[offset:] + key[:offset])
        if opcode == _TEXT and self.opcode is None:
            self.opcode = _TEXT
            self.decoder = _Utf8Decoder()
        self._add(chunk, final=False)
        self.partial_done += len(chunk)

    def _decode_utf8(self, data: bytes, final: bool) -> str:
        decoder = self.decoder
        assert decoder is not None
        try:
            text = decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise InvalidPayload(f"invalid UTF-8 in text message: {exc.reason} (§8.1)") from None
        if not final:
            pending = decoder.getstate()[0]
            # CPython waits for a third byte before rejecting ED A0..BF, the
            # start of an encoded UTF-16 surrogate; reject it now.
            if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
                raise InvalidPayload("invalid UTF-8 in text message: encoded surrogate (§8.1)")
        return text

    def _data(self, opcode: int, fin: int, rsv1: int, payload: bytes, events: list[Event]) -> None:
        """Reassemble a data frame into its message (§5.4)."""
        wire_opcode = opcode
        partial = self.partial_done
        self.partial_done = 0
        if opcode == _CONT:
            opcode = self.opcode or _CONT  # the message's opcode: _check_header made sure there is one
        elif partial:
            # The first frame was partly decoded already: it is the message.
            pass
        else:
            self.opcode = opcode
            self.compressed = bool(rsv1)
            if fin and not rsv1:
                # The common case, one frame one message, takes no detour.
                self.opcode = None
                if opcode == _TEXT:
                    try:
                        events.append((_TEXT, payload.decode()))
                    except UnicodeDecodeError as exc:
                        raise InvalidPayload(
                            f"invalid UTF-8 in text message: {exc.reason} (§8.1)"
                        ) from None
                else:
                    events.append((_BINARY, payload))
                self.room -= 1
                return
            if opcode == _TEXT:
                self.decoder = _Utf8Decoder()
        if self.compressed:
            assert self.extension is not None
            remaining = None if self.max_size is None else self.max_size - self.size
            size = len(payload)
            payload = self.extension.decode(payload, bool(fin), remaining)
            if self.log is not None:
                self.log(wire_opcode, bool(fin), True, payload, size, self.wire)
        self.size += len(payload)
        self._add(payload[partial:], final=bool(fin))
        if fin:
            parts = self.parts
            small = self.small
            message: str | bytes
            if opcode == _TEXT:
                if small:
                    parts.append(small.decode())  # validated by _add already
                message = "".join(cast("list[str]", parts))
            else:
                if small:
                    parts.append(small)
                message = b"".join(cast("list[bytes | bytearray]", parts))
            events.append((opcode, message))
            self.room -= 1
            self.opcode = None
            self.compressed = False
            self.parts = []
            small.clear()  # which frees its memory
            self.size = 0
            self.decoder = None

    def _add(self, data: bytes, final: bool) -> None:
        """Add the next piece of the message: a frame's payload or part of one.

        A piece of ``_KEEP`` bytes or more goes to ``parts`` as it is, or for
        text, decoded; smaller ones are appended to ``small``. Text is
        validated as it comes (§8.1, fail fast) but small pieces are decoded
        only when a large piece or the end of the message comes, all at once:
        a str per tiny fragment would cost ~50 bytes.
        """
        small = self.small
        if self.opcode != _TEXT:
            if len(data) < _KEEP:
                small += data
            else:
                if small:
                    self.parts.append(bytes(small))
                    small.clear()
                self.parts.append(data)
            return
        if len(data) < _KEEP:
            self._decode_utf8(data, final)  # the text itself comes later
            small += data
            return
        # The decoder holds back the first bytes of a character that is not
        # complete yet, the end of small; the large piece's text starts with
        # that character.
        decoder = self.decoder
        assert decoder is not None
        if small:
            cut = len(small) - len(decoder.getstate()[0])
            if cut:
                self.parts.append(small[:cut].decode())
        self.parts.append(self._decode_utf8(data, final))
        small[:] = decoder.getstate()[0]

    def _control(self, opcode: int, payload: bytes, events: list[Event]) -> None:
        """Control frames may come between fragments; they act at once (§5.5)."""
        self.controls += 1
        if opcode == _CLOSE:
            events.append((_CLOSE, Close.parse(payload)))
            # §5.5.1: after a close frame, the peer sends no more data.
            self.done = True
        else:
            events.append((opcode, payload))


# ------------------------------------------------------------------ protocol

# Messages shorter than this go uncompressed even with permessage-deflate.
# Measured (zlib 1.2.13, JSON telemetry, see common/deflate.py's settings):
# sending costs ~3 us per message and compressing adds ~6 us whatever the
# size up to 512 B. Without context takeover a 32-byte message shrinks by 4
# bytes, a 64-byte one by a third; from 128 bytes on deflate about halves a
# message even without context takeover (with it, to a fifth).
COMPRESSION_THRESHOLD = 128

# Up to this size, a frame's header and payload are joined into one bytes
# object; beyond, they are returned apart, so that a large payload is not
# copied behind its header (the adapter writes both).
_JOIN_LIMIT = 16384


class State(enum.IntEnum):
    """The connection's state (RFC 6455 §4.1, §7).

    A connection exists only once the handshake succeeded, so it is never
    CONNECTING; the value is kept to match the ``websockets`` API.
    """

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


@dataclass(frozen=True, slots=True)
class Ping:
    """The peer pinged (§5.5.2); :class:`Protocol` has queued the pong already."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """The peer sent a pong (§5.5.3): an answer to a ping of ours, or a heartbeat."""

    data: bytes


#: What :meth:`Protocol.receive_data` returns, in the order of the wire: a
#: message (``str`` for text, ``bytes`` for binary), a :class:`Ping`, a
#: :class:`Pong`, the peer's :class:`~common.frames.Close`, or last of all a
#: :class:`~common.exceptions.ProtocolError` when the peer broke the protocol
#: (the adapter then calls :meth:`Protocol.fail`, once it has delivered the
#: messages before it).
ProtocolEvent = Union[str, bytes, Ping, Pong, Close, ProtocolError]

# A close frame carries a code and at most 123 bytes of reason (§5.5.1).
MAX_REASON = 123


class Protocol:
    """One side of one WebSocket connection, as a state machine without I/O.

    ``is_client`` chooses the side: a client masks what it sends and expects
    unmasked frames, a server the opposite (§5.1, §5.3). ``max_size`` bounds
    an incoming message; ``extension`` is the negotiated permessage-deflate,
    if any. ``log_in`` and ``log_out``, when given, see every frame received
    and sent (the wire view): ``log(opcode, fin, rsv1, payload, size, wire)``,
    ``payload`` uncompressed, ``size`` its bytes on the wire and ``wire`` the
    frame as sent or received (all of it up to 125 bytes of payload, else its
    header), for ``python3 -m common explain``.

    Receiving: :meth:`receive_data` parses and returns events; a ping is
    answered at once (the pong waits in :meth:`data_to_send`); the peer's close
    is recorded and returned, to be answered by :meth:`answer_close` when the
    adapter has delivered the messages before it (§7.1.5 orders nothing
    more). Sending: :meth:`send_message`, :meth:`send_fragments`,
    :meth:`send_ping`, :meth:`send_pong`, :meth:`send_close` and :meth:`fail`
    return the bytes to write, in order.
    """

    __slots__ = (
        "is_client", "state", "receiver", "extension", "log_out",
        "close_sent", "close_rcvd", "close_rcvd_then_sent", "failed", "_pending_output",
    )

    def __init__(
        self,
        *,
        is_client: bool,
        max_size: int | None = 2**20,
        extension: Extension | None = None,
        log_in: Callable[..., None] | None = None,
        log_out: Callable[..., None] | None = None,
    ) -> None:
        self.is_client = is_client
        self.state = State.OPEN
        self.receiver = Receiver(expect_masked=not is_client, max_size=max_size, extension=extension, log=log_in)
        self.extension = extension
        self.log_out = log_out
        self.close_sent: Close | None = None
        self.close_rcvd: Close | None = None
        #: Which close frame came first, once there was one: True if the peer's.
        self.close_rcvd_then_sent: bool | None = None
        #: True once this side failed the connection (see :meth:`fail`).
        self.failed = False
        # Bytes produced while receiving (pongs), until data_to_send(); None
        # rather than an empty list, which every idle connection would hold.
        self._pending_output: list[bytes] | None = None

    # -------------------------------------------------------------- receiving

    def receive_data(self, data: bytes, max_messages: int | None = None) -> list[ProtocolEvent]:
        """Parse ``data``; return the events it completes, in order.

        At most ``max_messages`` messages (None: no limit); the rest stays
        buffered until ``receive_data(b"", n)`` (see :attr:`pending`). A ping
        queues its pong (§5.5.2, "as soon as practical") while the connection
        is OPEN; after our close frame, nothing but the close matters.
        """
        receiver = self.receiver
        parsed = receiver.feed(data, max_messages)
        if not receiver.controls:  # messages only: the common case, one message most often
            return [parsed[0][1]] if len(parsed) == 1 else [payload for _, payload in parsed]
        events: list[ProtocolEvent] = []
        append = events.append
        for opcode, payload in parsed:
            if opcode == _TEXT or opcode == _BINARY:
                append(payload)
            elif isinstance(payload, Close):
                self.close_rcvd = payload
                if self.close_rcvd_then_sent is None:
                    self.close_rcvd_then_sent = True
                append(payload)
            elif isinstance(payload, bytes):
                if opcode == _PONG:
                    append(Pong(payload))
                    continue
                if self.state is State.OPEN:
                    if self._pending_output is None:
                        self._pending_output = []
                    self._pending_output += self._frame(_PONG, payload)
                append(Ping(payload))
            else:
                append(payload)  # the ProtocolError that ends the events
        return events

    def receive_eof(self) -> None:
        """The TCP connection ended (the peer's EOF, or it broke): CLOSED."""
        self.state = State.CLOSED
        self._pending_output = None

    @property
    def pending(self) -> int:
        """Bytes received but left unparsed at ``max_messages`` (see :meth:`receive_data`)."""
        return self.receiver.pending

    @property
    def receiving_done(self) -> bool:
        """True once the peer's close or a protocol error ended what it may send."""
        return self.receiver.done

    def data_to_send(self) -> list[bytes]:
        """The bytes that receiving produced (pongs), in order; taken once."""
        output, self._pending_output = self._pending_output, None
        return [] if output is None else output

    # ---------------------------------------------------------------- sending

    def send_message(self, message: str | bytes) -> list[bytes]:
        """One whole text (``str``) or binary (``bytes``) message, compressed if worth it."""
        if isinstance(message, str):
            opcode, payload = _TEXT, message.encode()
        else:
            opcode, payload = _BINARY, message
        return self.send_data(opcode, payload)

    def send_data(self, opcode: int, payload: bytes) -> list[bytes]:
        """A whole message of ``opcode`` (TEXT or BINARY) whose payload is ``payload``."""
        extension = self.extension
        if extension is not None and len(payload) >= COMPRESSION_THRESHOLD:
            return self._frame(opcode, extension.encode(payload), rsv1=True, original=payload)
        return self._frame(opcode, payload)

    def send_fragments(self, fragments: Iterable[str | bytes]) -> list[bytes]:
        """One message, a frame per fragment (§5.4); all ``str`` or all ``bytes``.

        Checked whole before any byte is produced: a message abandoned halfway
        would leave the peer inside a fragmented message. Not compressed.
        """
        parts = list(fragments)
        if not parts:
            return []
        is_text = isinstance(parts[0], str)
        if any(isinstance(part, str) != is_text for part in parts):
            raise TypeError("all fragments of a message must be str, or all bytes")
        opcode = _TEXT if is_text else _BINARY
        output: list[bytes] = []
        for index, part in enumerate(parts):
            payload = part.encode() if isinstance(part, str) else bytes(part)
            output += self._frame(opcode, payload, fin=index == len(parts) - 1)
            opcode = _CONT
        return output

    def send_ping(self, payload: bytes) -> list[bytes]:
        """A ping (§5.5.2); the payload is at most 125 bytes."""
        check_control_payload(payload)
        return self._frame(_PING, payload)

    def send_pong(self, payload: bytes) -> list[bytes]:
        """An unsolicited pong (§5.5.3): a heartbeat."""
        check_control_payload(payload)
        return self._frame(_PONG, payload)

    def send_close(self, close: Close) -> list[bytes]:
        """Start the close handshake, or answer the peer's (§5.5.1, §7.1.2): CLOSING.

        If the peer's close came first, the handshake is now complete (see
        :attr:`close_transport`).
        """
        if self.state is not State.OPEN:
            raise RuntimeError(f"cannot send a close frame in state {self.state.name}")
        self.close_sent = close
        if self.close_rcvd_then_sent is None:
            self.close_rcvd_then_sent = False
        self.state = State.CLOSING
        return self._frame(_CLOSE, close.serialize())

    def answer_close(self) -> list[bytes]:
        """Answer the peer's close, echoing its code (§5.5.1); nothing if ours went first.

        A close without a code is answered without one.
        """
        assert self.close_rcvd is not None, "no close frame was received"
        if self.state is not State.OPEN:
            return []
        return self.send_close(self.close_rcvd)

    def fail(self, code: int, reason: str = "") -> list[bytes]:
        """Fail the connection (§7.1.7): a close frame with ``code``, if still OPEN.

        For a :class:`~common.exceptions.ProtocolError`, ``code`` is its
        ``code`` (1002, 1007, 1009) and ``reason`` its text; the reason is
        cut to fit a control frame. A server then ends its direction at once
        (:attr:`half_close`) instead of waiting for the peer's answer.
        """
        if self.state is not State.OPEN:
            return []
        self.failed = True
        return self.send_close(Close(code, _cut(reason, MAX_REASON)))

    @property
    def close_transport(self) -> bool:
        """The close handshake is complete and this side closes TCP first: the server (§7.1.1).

        (The client waits for the server to close, then closes too.)
        """
        return not self.is_client and self.close_sent is not None and self.close_rcvd is not None

    @property
    def half_close(self) -> bool:
        """This server failed the connection: it ends its direction now and reads
        until the peer leaves (closing outright with unread data would make the
        kernel send a reset, which can destroy the close frame in flight)."""
        return self.failed and not self.is_client

    @property
    def sides(self) -> tuple[str, str]:
        """("client", "server") or ("server", "client"): this side's name, then the peer's."""
        return ("client", "server") if self.is_client else ("server", "client")

    def describe_close(self) -> str:
        """The close handshake in words, for the wire view (§7.1.2-§7.1.5)."""
        us, peer = self.sides
        sent, rcvd = self.close_sent, self.close_rcvd
        if sent is None and rcvd is None:
            return "no close frame either way (1006, abnormal closure)"
        if self.close_rcvd_then_sent:
            return f"the {peer} closed with {rcvd}; the {us} answered with {sent}"
        if rcvd is None:
            return f"the {us} closed with {sent}; the {peer}'s close never came"
        # Ours went first; the peer's may have crossed it rather than answered it.
        return f"the {us} closed with {sent}; the {peer}'s close came back with {rcvd}"

    def closed_exception(self) -> ConnectionClosed:
        """What using the connection raises once it is closed: OK after 1000, 1001 or
        a close without a code (1005, how browsers close by default) both ways; Error otherwise."""
        ok = (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD)
        rcvd, sent = self.close_rcvd, self.close_sent
        if rcvd is not None and sent is not None and rcvd.code in ok and sent.code in ok:
            return ConnectionClosedOK(rcvd, sent, self.close_rcvd_then_sent)
        return ConnectionClosedError(rcvd, sent, self.close_rcvd_then_sent)

    # ---------------------------------------------------------------- framing

    def _frame(
        self, opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False, original: bytes | None = None
    ) -> list[bytes]:
        """Encode one frame (§5.2), masked on the client side (§5.3): one bytes
        object, or header and payload apart when the payload is large."""
        plain = payload
        if self.is_client:
            header, payload = encode_frame_parts(opcode, payload, fin, rsv1, True)
        else:  # unmasked: the header is all there is to make
            header = encode_header(opcode, len(payload), fin, rsv1)
        if self.log_out is not None:
            size = len(payload)
            shown = plain if original is None else original
            self.log_out(opcode, fin, rsv1, shown, size, header + payload if size <= 125 else header)
        if len(payload) <= _JOIN_LIMIT:
            return [header + payload]
        return [header, payload]


def check_control_payload(payload: bytes, limit: int = 125) -> None:
    """Control frames carry at most 125 bytes (§5.5)."""
    if len(payload) > limit:
        raise ValueError(f"{len(payload)} bytes do not fit a control frame (at most {limit})")


def _cut(text: str, limit: int) -> str:
    """``text`` shortened to at most ``limit`` bytes of UTF-8, on a character boundary."""
    return text.encode()[:limit].decode(errors="ignore")


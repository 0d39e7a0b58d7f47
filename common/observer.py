"""Watch a WebSocket connection from the middle, without taking part in it (sans-I/O).

What ``python3 -m common inspect`` (:mod:`common.inspector`) runs on each
connection it relays. :class:`Watch` is fed a copy of the bytes that pass
each way, as they pass, and says what they were: the opening handshake
(request, response, the ``Sec-WebSocket-Accept`` check, what was agreed),
then every frame, as the peer that receives it reads it. It decides nothing
for the peers and changes no byte: a frame that breaks the protocol is
reported with the close code its receiver would send, and that direction is
watched no further (the bytes after it cannot be trusted to be frames).

The checks are the library's own: each direction is a
:class:`~common.protocol.Receiver` (the same header checks, §5.1-§5.5, and
UTF-8 check, §8.1), and a compressed message goes through the
:class:`~common.deflate.PerMessageDeflate` that the handshake agreed on
(RFC 7692), with one decompression context per direction, as the receiving
peer keeps it. Unlike a connection's receiver, a direction never holds a
message, nor even a frame: each frame's payload is looked at as it streams
past, and only its first :data:`PREVIEW` bytes are kept. Between two calls a
direction holds a few hundred bytes (plus a decompressor's window with
permessage-deflate), whether a 16 MiB message or a million tiny frames
passed; a call holds the frames it returns, so its cost follows the size of
the piece it is given.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .deflate import NAME as DEFLATE
from .deflate import Params, PerMessageDeflate, parse_extensions
from .exceptions import InvalidHandshake, NegotiationError, ProtocolError
from .frames import Close, FrameHeader, IncompleteHeader, Opcode, apply_mask, parse_header
from .handshake import accept_key
from .http11 import MAX_HEAD, Request, Response, parse_request, parse_response
from .protocol import Receiver

__all__ = ["Watch", "Frame", "Handshake", "PREVIEW", "preview_text"]

#: How many bytes of each payload are kept (after unmasking and inflating).
PREVIEW = 256

_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

#: The longest frame header: 2 bytes, a 64-bit length and a masking key (§5.2).
_MAX_HEADER = 14

#: Inflated output is produced in pieces of at most this many bytes, so that a
#: small frame that inflates to gigabytes (a "zip bomb") is looked at and
#: dropped a piece at a time.
_INFLATE_PIECE = 1 << 16


@dataclass(slots=True)
class Frame:
    """One frame that passed, as its receiver read it.

    ``wire`` is the frame as it came (masked, compressed) up to its header
    and the first :data:`PREVIEW` payload bytes; ``preview`` the start of
    the payload once unmasked and, for a compressed message, inflated.
    ``message`` is the opcode of the message a data frame belongs to (TEXT
    or BINARY; a continuation's is its first frame's). ``error`` is the
    protocol error this frame makes its receiver fail the connection with:
    it may come with the header alone, before the payload.
    """

    side: str                           # who sent it: "client" or "server"
    header: FrameHeader
    wire: bytes
    time: float = 0.0                   # when its first byte passed (time.time())
    message: int | None = None
    preview: bytes = b""
    compressed: bool = False            # RSV1: part of a compressed message (RFC 7692 §6)
    inflated: int | None = None         # bytes the payload inflated to, when compressed
    close: Close | None = None
    error: ProtocolError | None = None
    seen: int = 0                       # payload bytes that passed (less than the length: the frame was cut)

    @property
    def cut(self) -> bool:
        """Whether :attr:`preview` is shorter than the (inflated) payload."""
        size = self.inflated if self.inflated is not None else self.header.length
        return len(self.preview) < size


@dataclass
class Handshake:
    """The opening handshake as it passed: request and response, as far as they came."""

    request: Request | None = None
    response: Response | None = None
    request_head: bytes = b""
    response_head: bytes = b""
    #: The Sec-WebSocket-Accept check done as a client does it (§4.1), in words; "" when there is nothing to check.
    accept: str = ""
    #: permessage-deflate's parameters, when the 101 response agreed on it.
    deflate: Params | None = None

    @property
    def upgrade(self) -> bool:
        """Whether the request asks for a WebSocket (Upgrade: websocket)."""
        return self.request is not None and "websocket" in (t.lower() for t in self.request.headers.tokens("Upgrade"))


class _Head:
    """An HTTP head arriving in pieces, up to the blank line; bounded by :data:`MAX_HEAD`."""

    def __init__(self) -> None:
        self.data = bytearray()

    def feed(self, data: bytes) -> tuple[bytes | None, int]:
        """Add ``data``; return the whole head once it is here (else None) and how much of ``data`` it took."""
        start = max(0, len(self.data) - 3)  # the blank line may straddle two pieces
        self.data += data
        end = self.data.find(b"\r\n\r\n", start)
        if end < 0:
            if len(self.data) > MAX_HEAD:
                raise InvalidHandshake(f"no end of the head within {MAX_HEAD:,} bytes")
            return None, len(data)
        end += 4
        head = bytes(self.data[:end])
        taken = len(data) - (len(self.data) - end)
        self.data = bytearray()
        return head, taken


class Direction(Receiver):
    """The frames one side sends, as the other side's receiver reads them, streamed.

    A :class:`~common.protocol.Receiver` for its checks and its state (the
    message being received, its compression, its UTF-8 decoder), fed by
    :meth:`watch` a piece at a time; it keeps no payload beyond a preview.
    """

    __slots__ = ("side", "head", "frame", "remaining", "inflater", "control", "stopped", "left")

    def __init__(self, side: str, inflater: PerMessageDeflate | None) -> None:
        super().__init__(expect_masked=side == "client", max_size=None, extension=inflater)
        self.side = side
        self.inflater = inflater
        self.head = bytearray()         # a header still arriving
        self.frame: Frame | None = None  # the frame whose payload is passing
        self.remaining = 0              # its payload bytes still to come
        self.control = bytearray()      # a control frame's payload (at most 125 bytes)
        self.stopped = ""               # why this direction is no longer watched
        self.left = 0                   # bytes of the last piece not looked at, once stopped

    def watch(self, data: bytes | memoryview) -> list[Frame]:
        """Look at the next bytes; the frames they complete (or fail), in order."""
        done: list[Frame] = []
        view = memoryview(data)
        pos = 0
        while pos < len(view) and not self.stopped:
            if self.frame is None:
                pos += self._header(view[pos:], done)
                continue
            take = min(self.remaining, len(view) - pos)
            try:
                self._payload(view[pos : pos + take])
                self.remaining -= take
                pos += take
                if not self.remaining:
                    self._end()
            except ProtocolError as exc:
                self._fail(self.frame, exc)
            if not self.remaining or self.stopped:
                done.append(self.frame)
                self.frame = None
        self.left = len(view) - pos
        return done

    def _header(self, data: memoryview, done: list[Frame]) -> int:
        """Read (part of) a header; how many bytes of ``data`` it took."""
        before = len(self.head)
        self.head += data[: _MAX_HEADER - before]
        try:
            header = parse_header(bytes(self.head))
        except IncompleteHeader:
            return len(self.head) - before
        taken = header.size - before
        wire = bytes(self.head[: header.size])
        self.head.clear()
        frame = self.frame = Frame(self.side, header, wire, time.time())
        self.remaining = header.length
        try:
            self._start(frame)
        except ProtocolError as exc:
            self._fail(frame, exc)
        if self.stopped or not self.remaining:
            if not self.stopped:
                self._end()
            done.append(frame)
            self.frame = None
        return taken

    def _start(self, frame: Frame) -> None:
        """A header is in: the receiver's checks (§5.2-§5.5), then what the frame belongs to."""
        header = frame.header
        b0 = frame.wire[0]
        if header.length >> 63:
            raise ProtocolError("64-bit payload length with the top bit set (§5.2)")
        self._check_header(b0, header.opcode, header.length, header.masked)
        if header.opcode >= Opcode.CLOSE:
            self.control.clear()
            return
        if header.opcode != Opcode.CONT:
            self.opcode = header.opcode
            self.compressed = header.rsv1
            self.decoder = _Utf8Decoder() if header.opcode == Opcode.TEXT else None
            self.size = 0
        frame.message = self.opcode
        frame.compressed = self.compressed
        if self.compressed:
            frame.inflated = 0

    def _payload(self, chunk: memoryview) -> None:
        """Part of the payload: unmasked, previewed, checked (and inflated) as the receiver would."""
        frame = self.frame
        assert frame is not None
        header = frame.header
        done = frame.seen
        frame.seen += len(chunk)
        if len(frame.wire) < header.size + PREVIEW:
            frame.wire += bytes(chunk[: header.size + PREVIEW - len(frame.wire)])
        if self.decoder is None and not frame.compressed and header.opcode < Opcode.CLOSE:
            # Binary, not compressed: nothing past the preview is checked or kept, so nothing
            # past it is unmasked (a fifth of the inspector's time on large messages).
            chunk = chunk[: max(0, PREVIEW - len(frame.preview))]
            if not chunk:
                return
        data = bytes(chunk)
        if header.mask_key is not None:
            shift = done % 4
            data = apply_mask(data, header.mask_key[shift:] + header.mask_key[:shift])
        if header.opcode >= Opcode.CLOSE:
            self.control += data
            frame.preview = bytes(self.control)
            return
        if frame.compressed:
            self._inflate(frame, data, final=False)
        else:
            self._look(frame, data, final=False)

    def _inflate(self, frame: Frame, data: bytes, final: bool) -> None:
        assert self.inflater is not None and frame.inflated is not None
        for piece in self.inflater.inflate(data, final, _INFLATE_PIECE):  # final: with the 00 00 ff ff
            frame.inflated += len(piece)
            self._look(frame, piece, final=False)
        if final:
            self._look(frame, b"", final=True)

    def _look(self, frame: Frame, data: bytes, final: bool) -> None:
        """Keep the start of a message's data, and check its UTF-8 as it comes (§8.1)."""
        if len(frame.preview) < PREVIEW:
            frame.preview += data[: PREVIEW - len(frame.preview)]
        if self.decoder is not None:
            self._decode_utf8(data, final)

    def _end(self) -> None:
        """The frame's payload is all here: a control frame acts, a message may end."""
        frame = self.frame
        assert frame is not None
        header = frame.header
        if header.opcode == Opcode.CLOSE:
            frame.close = Close.parse(bytes(self.control))
            self.stopped = "closed"  # §5.5.1: after a close frame, the peer sends no more data
            return
        if header.opcode >= Opcode.CLOSE or not header.fin:
            return
        if frame.compressed:
            self._inflate(frame, b"", final=True)
        else:
            self._look(frame, b"", final=True)
        self.opcode = None
        self.compressed = False
        self.decoder = None

    def _fail(self, frame: Frame, exc: ProtocolError) -> None:
        frame.error = exc
        self.stopped = "failed"
        self.head.clear()
        self.control.clear()

    def eof(self) -> Frame | None:
        """The side stopped sending: a frame cut short, if one was passing."""
        frame, self.frame = self.frame, None
        self.head.clear()
        return frame


def preview_text(frame: Frame) -> tuple[str, str]:
    """The preview in words: ``("text", ...)`` for a text message's data, or a ping, pong or
    close reason that reads as text; else ``("hex", ...)``."""
    opcode = frame.header.opcode
    kind = frame.message if opcode == Opcode.CONT else opcode
    data = frame.preview[2:] if opcode == Opcode.CLOSE else frame.preview
    if kind in (Opcode.TEXT, Opcode.PING, Opcode.PONG, Opcode.CLOSE):
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            # A preview (or a fragment) may end inside a character: the text up to it.
            if exc.start < len(data) - 3 or exc.reason != "unexpected end of data":
                return "hex", frame.preview.hex(" ")
            text = data[: exc.start].decode()
        if kind == Opcode.TEXT or text.isprintable():
            return "text", text
    return "hex", frame.preview.hex(" ")


@dataclass
class _Side:
    frames: int = 0
    bytes: int = 0


@dataclass
class Watch:
    """One relayed connection, watched: feed it what passes each way, read what it saw.

    :meth:`client_data` and :meth:`server_data` take the bytes each side
    sent, in the order they passed, and return what they completed: the
    :class:`Handshake` (each time a part of it is in) and each
    :class:`Frame`. ``on_note`` is called with each thing worth saying in
    words (a frame that breaks the protocol, a handshake that cannot be
    read).
    """

    on_note: Callable[[str], None] = lambda note: None
    handshake: Handshake = field(default_factory=Handshake)
    #: "handshake", "open", "closing", "closed", "http" (plain HTTP), "refused" (no 101) or "unknown".
    state: str = "handshake"
    counts: dict[str, _Side] = field(default_factory=lambda: {"client": _Side(), "server": _Side()})
    closes: dict[str, Close] = field(default_factory=dict)
    #: Who sent the first close frame: "client", "server" or "".
    first_close: str = ""
    #: Who ended TCP first, once one did: "client" or "server".
    first_eof: str = ""
    directions: dict[str, Direction] = field(default_factory=dict)
    _heads: dict[str, _Head] = field(default_factory=lambda: {"client": _Head(), "server": _Head()})
    # Client bytes after its request, before the 101; None once too many came.
    _early: bytearray | None = field(default_factory=bytearray)

    def client_data(self, data: bytes) -> list[Frame | Handshake]:
        return self._data("client", data)

    def server_data(self, data: bytes) -> list[Frame | Handshake]:
        return self._data("server", data)

    def _data(self, side: str, data: bytes) -> list[Frame | Handshake]:
        self.counts[side].bytes += len(data)
        if side in self.directions:
            return self._frames(side, data)
        if self.state == "unknown" or self.handshake.response is not None:
            return []  # past a refusal or a plain HTTP answer, only the bytes are counted
        if side == "client" and self.handshake.request is not None:
            self._wait_for_answer(data)
            return []
        if side == "server" and self.handshake.request is None:
            return []  # a server that speaks first is not one the inspector can read
        try:
            head, taken = self._heads[side].feed(data)
        except InvalidHandshake as exc:
            return self._unreadable(side, str(exc))
        if head is None:
            return []
        try:
            out: list[Frame | Handshake] = [self._head(side, head)]
        except InvalidHandshake as exc:
            return self._unreadable(side, str(exc))
        rest = data[taken:]
        if side == "server" and self.state == "open":
            if self._early is None:
                self.directions["client"].stopped = "unread"
            elif self._early:
                out += self._frames("client", bytes(self._early))
            self._early = bytearray()
            if rest:
                out += self._frames("server", rest)
        elif side == "client" and rest:
            self._wait_for_answer(rest)
        return out

    def _wait_for_answer(self, data: bytes) -> None:
        """Hold frames the client sent before the server's answer, which says how to read them (RFC 7692).

        Clients wait for the 101 (§4.1); one that does not gets :data:`MAX_HEAD`
        bytes held, and past that its frames are relayed without being shown.
        """
        if self._early is None:
            return
        if len(self._early) + len(data) > MAX_HEAD:
            self._early = None
            self.on_note(f"the client sent more than {MAX_HEAD:,} bytes before the server's answer: its frames"
                         " are relayed, not shown")
            return
        self._early += data

    def _unreadable(self, side: str, why: str) -> list[Frame | Handshake]:
        self.state = "unknown"
        self.on_note(f"the {side}'s HTTP head cannot be read ({why}): its bytes are relayed, not shown")
        return []

    def _head(self, side: str, head: bytes) -> Handshake:
        handshake = self.handshake
        if side == "client":
            handshake.request_head = head
            handshake.request = parse_request(head)
            if not handshake.upgrade:
                self.state = "http"
            return handshake
        handshake.response_head = head
        response = handshake.response = parse_response(head)
        request = handshake.request
        assert request is not None
        accept = response.headers.get("Sec-WebSocket-Accept")
        key = request.headers.get("Sec-WebSocket-Key")
        if accept is not None and key is not None:
            expected = accept_key(key)
            handshake.accept = (f"matches: base64(SHA-1(key + GUID)) = {expected} (§4.2.2)" if accept == expected
                                else f"does NOT match: the key gives {expected}; the client must fail the"
                                " connection (§4.1)")
        if self.state == "http":
            return handshake
        if response.status != 101:
            self.state = "refused"
            return handshake
        self.state = "open"
        handshake.deflate = self._agreed(response)
        for sender in ("client", "server"):
            self.directions[sender] = Direction(sender, _inflater(handshake.deflate, sender))
        return handshake

    def _agreed(self, response: Response) -> Params | None:
        """permessage-deflate's parameters if the 101 response agreed on it (RFC 7692 §5)."""
        try:
            extensions = parse_extensions(response.headers.get_all("Sec-WebSocket-Extensions"))
            for name, params in extensions:
                if name.lower() == DEFLATE:
                    return Params.parse(params, offer=False)
        except NegotiationError as exc:
            self.on_note(f"the response's Sec-WebSocket-Extensions is not valid ({exc}): the client must fail"
                         " the connection (RFC 7692 §7); frames are read as uncompressed")
        return None

    def _frames(self, side: str, data: bytes) -> list[Frame | Handshake]:
        direction = self.directions[side]
        frames = direction.watch(data) if not direction.stopped else []
        for frame in frames:
            self._count(frame)
        if direction.stopped == "closed" and (direction.left or not frames):
            direction.stopped = "closed, then more"
            self.on_note(f"the {side} sent more bytes after its close frame, which it must not (§5.5.1):"
                         " they are relayed, not read")
        return list(frames)

    def _count(self, frame: Frame) -> None:
        side = frame.side
        self.counts[side].frames += 1
        if frame.error is not None:
            other = "server" if side == "client" else "client"
            self.on_note(f"the {side}'s frame breaks the protocol: {frame.error}; the {other} would fail the"
                         f" connection with close code {frame.error.code}")
        elif frame.close is not None:
            self.closes[side] = frame.close
            if not self.first_close:
                self.first_close = side
                self.state = "closing"

    def eof(self, side: str) -> Frame | None:
        """``side`` ended its direction of TCP; the frame it cut short, if any."""
        if not self.first_eof:
            self.first_eof = side
        direction = self.directions.get(side)
        frame = direction.eof() if direction is not None else None
        if frame is not None:
            self.counts[side].frames += 1
        return frame

    def end(self) -> None:
        """TCP is over both ways."""
        if self.state in ("handshake", "open", "closing"):
            self.state = "closed"

    def how_closed(self) -> str:
        """How the connection ended, in words: who closed first, the codes, or that there was no close handshake."""
        first = self.first_close
        if not first:
            if self.state == "closed" and self.directions:
                return f"no close handshake: the {self.first_eof or 'client'} ended TCP (1006, abnormal closure)"
            return ""
        other = "server" if first == "client" else "client"
        text = f"the {first} closed first: {self.closes[first]}"
        if other in self.closes:
            return f"{text}; the {other} answered {self.closes[other]}"
        if self.state == "closed":
            return f"{text}; no answer from the {other} before TCP ended"
        return text


def _inflater(params: Params | None, sender: str) -> PerMessageDeflate | None:
    """A decompressor for what ``sender`` compresses, as its receiver keeps one (RFC 7692 §7.1).

    Inflating with the largest window works whatever window the sender
    used; only context takeover matters, and a receiver that keeps its
    context needs it whether or not the sender starts afresh.
    """
    if params is None:
        return None
    fresh = params.client_no_context_takeover if sender == "client" else params.server_no_context_takeover
    return PerMessageDeflate(remote_no_context_takeover=fresh)

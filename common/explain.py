"""Read the wire: WebSocket frames and opening handshakes explained field by field.

    python3 -m common explain 81 85 37 fa 21 3d 7f 9f 4d 51 58
    echo "88 02 03 e8" | python3 -m common explain --from server
    python3 -m common explain --file request.txt
    python3 test2/server.py -vv 2> wire.log; python3 -m common explain --file wire.log

Frames come as hex (spaces and newlines ignored, several frames in a row,
one direction), or as the wire view's lines (``-vv``: both directions, each
frame's sender told by its ``<`` or ``>`` line, see :func:`explain_wire_view`);
a handshake as text, a request (``GET ...``) or a response (``HTTP/1.1 ...``).
:func:`explain_stream` reads the input in pieces and explains each frame as
its hex arrives, so that memory holds one frame, not the whole input nor the
whole explanation: a capture of a million frames costs what one frame does.
Everything that decides goes through the library's own code: each frame is
fed to a :class:`~common.protocol.Receiver`, which unmasks, inflates, checks
UTF-8 and the close payload and raises the error a connection would fail
with; a request goes through :func:`~common.handshake.accept_request`, as
the server would run it. This module only says in words what the bits mean.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
from collections.abc import Iterable, Iterator

from .deflate import NAME as DEFLATE
from .deflate import Params, PerMessageDeflate, parse_extensions
from .exceptions import InvalidHandshake, NegotiationError, ProtocolError
from .frames import Close, FrameHeader, IncompleteHeader, Opcode, apply_mask, is_valid_close_code, parse_header
from .handshake import GUID, accept_key, accept_request
from .http11 import MAX_HEAD, Headers, parse_request, parse_response
from .observer import PREVIEW, Frame
from .protocol import Event, Receiver

__all__ = ["explain", "explain_stream", "explain_frames", "explain_wire_view", "explain_handshake", "parse_hex",
           "hex_chunks", "is_wire_view", "explain_observed", "code_meaning"]

#: Payloads longer than this are shown by their first and last bytes.
SHOWN = 64

OPCODES = {
    0x0: "continuation: the next fragment of a message (§5.4)",
    0x1: "text: a UTF-8 message, or its first fragment (§5.6)",
    0x2: "binary: a message of bytes, or its first fragment (§5.6)",
    0x8: "close: starts or answers the close handshake (§5.5.1)",
    0x9: "ping: the peer must answer with a pong (§5.5.2)",
    0xA: "pong: the answer to a ping, or a heartbeat (§5.5.3)",
}

CLOSE_CODES = {
    1000: "normal closure: the purpose of the connection is fulfilled",
    1001: "going away: a server shutting down, or a browser leaving the page",
    1002: "protocol error: the peer broke the protocol",
    1003: "unsupported data: a kind of message the endpoint cannot accept",
    1007: "invalid data: for example a text message that is not UTF-8",
    1008: "policy violation: a message the endpoint refuses",
    1009: "message too big: over the endpoint's size limit",
    1010: "mandatory extension: the client needed an extension the server refused",
    1011: "internal error: the server met an unexpected condition",
    1012: "service restart (IANA registry)",
    1013: "try again later: temporary overload (IANA registry)",
    1014: "bad gateway: a gateway got a bad answer upstream (IANA registry)",
}

HEADER_ROLES = {
    "host": "which server the client means; the lab's servers check it against their names (§4.1, DNS rebinding)",
    "upgrade": "must contain 'websocket': the switch from HTTP to the WebSocket protocol (§4.1, §4.2.2)",
    "connection": "must contain 'Upgrade', so that proxies do not forward the upgrade as is (§4.1, §4.2.2)",
    "sec-websocket-key": "16 random bytes in base64; the server proves it read them (§4.1)",
    "sec-websocket-version": "must be 13, the version of RFC 6455 (§4.1); otherwise the server answers 426",
    "origin": "the page's origin, sent by browsers; the server may refuse foreign ones with 403 (§4.1, §10.2)",
    "sec-websocket-protocol": "subprotocols offered (request) or the one chosen (response) (§4.1, §11.3.4)",
    "sec-websocket-extensions": "extensions offered or agreed, such as permessage-deflate (§9, RFC 7692)",
    "sec-websocket-accept": "base64(SHA-1(key + GUID)): proof that the server read this request's key (§4.2.2)",
    "user-agent": "the client's software; not part of the WebSocket handshake",
}


# --------------------------------------------------------------------------- input


#: How many characters of a file or standard input the command reads at a time.
PIECE = 1 << 16

#: A handshake is read whole, up to this many characters: 16 times the most
#: the library reads of a head (MAX_HEAD), room for any real one.
HANDSHAKE_LIMIT = 16 * MAX_HEAD

# What starts a handshake (a request line, or a status line), and what may
# still become one as more text comes.
_HANDSHAKE = re.compile(r"\s*([A-Za-z]+ \S+ HTTP/|HTTP/)")
_HANDSHAKE_START = re.compile(r"\s*(?:[A-Za-z]+(?: \S*(?: (?:H|HT|HTT|HTTP)?)?)?)?\Z")

# What starts a wire-view line (the -vv log): a time, a line's mark, or a frame's bytes.
_WIRE = re.compile(r"\s*(?:\d{4}-\d\d-\d\d[ T]|[<>=!%] |(?:frame|header)\s+[0-9a-fA-F])")
# Hex starts with a word of hex digits (0x prefixes included); a word that is
# not hex starts lines of text (wire-view lines, or what a terminal showed
# around them). Past this many characters, a word of hex digits is hex.
_FIRST_WORD = re.compile(r"\s*(\S*)")
_HEX_WORD = re.compile(r"[0-9a-fA-FxX]*")
_LONGEST_WORD = 16

# Left out of hex: spaces, newlines and 0x prefixes; then anything else is not hex.
_HEX_NOISE = re.compile(r"0[xX](?=[0-9a-fA-F])|\s")
_NOT_HEX = re.compile(r"[^0-9a-fA-F]")


def parse_hex(text: str) -> bytes:
    """Bytes from hex digits; spaces, newlines and ``0x`` prefixes are ignored."""
    return b"".join(hex_chunks([text]))


def hex_chunks(pieces: Iterable[str]) -> Iterator[bytes]:
    """Bytes from hex that comes in pieces (a file read part by part), as it comes.

    Like :func:`parse_hex`, and a piece may end anywhere: inside a ``0x`` or
    between the two digits of a byte. Raises ValueError at the first
    character that is not hex, or at the end after an odd number of digits.
    """
    held = ""  # the end of the last piece, when it may start a 0x prefix
    half = ""  # a digit waiting for the other half of its byte
    count = 0  # digits so far, for the error
    pieces = iter(pieces)
    while True:
        piece = next(pieces, None)
        text = held + (piece or "")
        digits = _HEX_NOISE.sub("", text)
        held = ""
        if piece is not None:
            # Whether a 0x is a prefix depends only on the next character, so
            # all is decided but a "0x" or "0" at the very end, which the next
            # piece may complete: it waits for that piece.
            keep = 2 if text.endswith(("0x", "0X")) else 1 if text.endswith("0") else 0
            held = text[len(text) - keep :]
            digits = digits[: len(digits) - keep]
        bad = _NOT_HEX.search(digits)
        if bad is not None:
            raise ValueError(f"not hex: {bad.group()!r} (frames are given as hex bytes, such as 81 05 48 65 6c 6c 6f)")
        count += len(digits)
        digits = half + digits
        half = digits[-1] if len(digits) % 2 else ""
        if len(digits) > 1:
            yield bytes.fromhex(digits[: len(digits) - len(half)])
        if piece is None:
            break
    if half:
        raise ValueError(f"an odd number of hex digits ({count}): each byte is two digits")


def is_wire_view(text: str) -> bool:
    """Whether ``text`` starts as wire-view lines do (a time, ``<``, ``>``, ``frame ...``), not as hex."""
    return _WIRE.match(text) is not None


def explain(
    text: str, *, side: str | None = None, deflate: bool = False, key: str | None = None,
    logged_by: str | None = None,
) -> str:
    """Explain ``text``: wire-view lines, a handshake, or frames in hex, by how it starts."""
    return "".join(explain_stream([text], side=side, deflate=deflate, key=key, logged_by=logged_by))


def explain_stream(
    pieces: Iterable[str], *, side: str | None = None, deflate: bool = False, key: str | None = None,
    logged_by: str | None = None,
) -> Iterator[str]:
    """Explain text that comes in pieces, such as a file read part by part, as it comes.

    Yields the explanation a few whole lines at a time (each line ending
    with a newline). Frames are explained one by one as their hex arrives:
    memory holds a piece and one frame, whatever the number of frames; bad
    hex raises ValueError where it is found, after the frames before it. A
    handshake is read whole: more than :data:`HANDSHAKE_LIMIT` characters of
    it raise ValueError. Wire-view lines (the ``-vv`` log) are read a line
    at a time (:func:`explain_wire_view`, where ``side`` and ``logged_by``
    are explained).
    """
    pieces = iter(pieces)
    start = ""
    kind = None
    while kind is None:  # read until the start tells a handshake, hex and lines of text apart
        piece = next(pieces, None)
        start += piece or ""
        kind = _kind(start, piece is None)
    if kind == "lines":
        yield from _wire_lines(_lines(itertools.chain([start], pieces)), side, deflate, logged_by)
        return
    if kind == "hex":
        yield from _frame_lines(_Input(hex_chunks(itertools.chain([start], pieces))), side, deflate)
        return
    parts = [start]
    size = len(start)
    for piece in pieces:
        parts.append(piece)
        size += len(piece)
        if size > HANDSHAKE_LIMIT:
            break
    if size > HANDSHAKE_LIMIT:
        raise ValueError(f"more than {HANDSHAKE_LIMIT:,} characters of handshake: a server reads at most"
                         f" {MAX_HEAD:,} bytes of one (common.http11.MAX_HEAD)")
    yield explain_handshake("".join(parts), key=key)


def _kind(start: str, ended: bool) -> str | None:
    """What the input that starts with ``start`` is: "handshake", "hex" or "lines" (wire-view lines,
    with whatever else a terminal showed); None while the start cannot tell yet."""
    if _HANDSHAKE.match(start):
        return "handshake"
    if _HANDSHAKE_START.match(start) and not ended and len(start) <= HANDSHAKE_LIMIT:
        return None
    match = _FIRST_WORD.match(start)
    assert match is not None
    word = match[1]
    if not _HEX_WORD.fullmatch(word):
        return "lines"
    if ended or match.end() < len(start) or len(word) > _LONGEST_WORD:
        return "hex"
    return None  # a word of hex digits, so far: a time such as 2026-12-07 starts so too


# --------------------------------------------------------------------------- frames


class _Input:
    """Bytes that come in chunks, read a frame at a time.

    Only what is not read yet of the chunks that came is held, so memory does
    not grow with the input; each read copies the bytes it returns, never the
    rest of the input.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self._pos = 0

    def _fill(self, size: int) -> int:
        """Read chunks until ``size`` bytes are here or the input ends; how many are."""
        buffer = self._buffer
        while len(buffer) - self._pos < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            del buffer[: self._pos]  # what was read goes: once per chunk, not once per frame
            self._pos = 0
            buffer += chunk
        return min(size, len(buffer) - self._pos)

    def peek(self, size: int) -> bytes:
        """The next ``size`` bytes, fewer where the input ends; they stay unread."""
        size = self._fill(size)
        with memoryview(self._buffer) as view:
            return bytes(view[self._pos : self._pos + size])

    def read(self, size: int) -> bytes:
        """The next ``size`` bytes, fewer where the input ends."""
        data = self.peek(size)
        self._pos += len(data)
        return data

    def skip(self) -> int:
        """Read to the end without keeping anything; how many bytes there were."""
        skipped = len(self._buffer) - self._pos
        self._buffer.clear()
        self._pos = 0
        return skipped + sum(len(chunk) for chunk in self._chunks)


#: The longest frame header: 2 bytes, a 64-bit length and a masking key (§5.2).
_MAX_HEADER = 14


def explain_frames(data: bytes, *, side: str | None = None, deflate: bool = False) -> str:
    """Explain the frames in ``data``, one after the other, as one peer sent them.

    ``side`` is who sent them, "client" or "server": the receiver then
    requires the masking that side must use (§5.1). None: the first frame's
    MASK bit says. ``deflate``: permessage-deflate was agreed, so RSV1 marks
    a compressed message (RFC 7692 §6). The receiver has the default
    ``max_size`` of :func:`~common.serve` and :func:`~common.connect`.
    """
    return "".join(_frame_lines(_Input([data]), side, deflate))


class _Direction:
    """The frames one side sent on one connection, as the other side receives them.

    ``side`` is who sent them, "client" or "server"; the receiver requires
    that side's masking and, with ``deflate``, inflates with one
    decompression context for the whole direction, as a connection does.
    """

    def __init__(self, side: str, deflate: bool) -> None:
        self.side = side
        self.deflate = deflate
        self.inflated: list[bytes] = []  # what the receiver's log saw a compressed frame inflate to
        self.receiver = Receiver(
            expect_masked=side == "client",
            extension=PerMessageDeflate() if deflate else None,
            log=lambda opcode, fin, compressed, payload, size, wire: self.inflated.append(payload),
        )
        #: Where this direction's history went missing (a frame logged by its
        #: header alone), for the error a compressed message may then meet.
        self.gap = ""


def _frame_lines(source: _Input, side: str | None, deflate: bool) -> Iterator[str]:
    """:func:`explain_frames` on bytes that come in chunks, a frame's lines at a time."""
    direction: _Direction | None = None
    number = 0
    while head := source.peek(_MAX_HEADER):
        number += 1
        try:
            header = parse_header(head)
        except IncompleteHeader as exc:
            yield f"frame {number}: {_truncated_header(exc)}\n"
            return
        if direction is None:
            direction = _Direction(side or ("client" if header.masked else "server"), deflate)
        frame = source.read(header.size + header.length)
        out, error = _frame(f"frame {number}", header, frame, direction)
        if error is not None:
            out += _hex_hints(error, number, side)
        if error is not None and (unread := source.skip()):
            out.append(f"the other {unread} byte(s) are not read: the connection is failed (§7.1.7)")
        yield "\n".join(out) + "\n"
        if error is not None:
            return
    if number == 0:
        yield "nothing to explain: no bytes given\n"
    elif direction is not None and direction.receiver.opcode is not None:
        yield "the bytes end inside a fragmented message: its last frame (FIN 1) has not come (§5.4)\n"


def _truncated_header(exc: IncompleteHeader) -> str:
    return (f"truncated header: {exc.available} byte(s) here, the header needs {exc.needed}:"
            f" {exc.needed - exc.available} missing (§5.2)")


#: The error zlib gives for a back-reference to bytes it never saw.
_TOO_FAR_BACK = "invalid distance too far back"


def _frame(label: str, header: FrameHeader, frame: bytes, direction: _Direction) -> tuple[list[str], str | None]:
    """One frame explained, and the error it failed the connection with (None if it did not).

    A truncated frame counts as failed: nothing after it can be read as frames.
    """
    out = [f"{label}: {_summary(header)}, {len(frame)} bytes, from the {direction.side}"]
    receiver = direction.receiver
    # A continuation's payload is shown as what its message is: text or binary.
    kind = receiver.opcode if header.opcode == Opcode.CONT and receiver.opcode is not None else header.opcode
    out += _fields(header, frame, direction.deflate, kind)
    direction.inflated.clear()
    error = _received(receiver, frame, header, direction.deflate, direction.inflated, out)
    if error is None and len(frame) < header.size + header.length:
        missing = header.size + header.length - len(frame)
        out.append(f"  truncated: the frame is {len(frame) + missing} bytes, {len(frame)} are here:"
                   f" {missing} missing (§5.2)")
        return out, "truncated"
    if error is not None and _TOO_FAR_BACK in error:
        out.append("  this compressed message refers back to the messages sent before it in the same direction"
                   " (context takeover, RFC 7692 §7.1.1, §7.2.3.2): they are not here, so it cannot be inflated")
        if direction.gap:
            out.append(f"  {direction.gap}, before it, was logged by its header alone: its bytes, which this"
                       " message may refer back to, are not in the log")
    return out, error


def _hex_hints(error: str, number: int, side: str | None) -> list[str]:
    """What to give instead, when the error comes from how the hex was given rather than from the frames."""
    if _TOO_FAR_BACK in error:
        return ["  give all the messages of that direction, from its first one after the handshake, in order,"
                " in one call (with --deflate)"]
    if "masked (§5.1)" in error and (number > 1 or side is None):
        return ["  hex is read as the frames of one direction: give the other direction's frames in another"
                " call, or give the -vv wire-view lines as they are, < and > included, to explain both"]
    return []


def _received(
    receiver: Receiver, frame: bytes, header: FrameHeader, deflate: bool, inflated: list[bytes], out: list[str]
) -> str | None:
    """Feed one frame to the receiver and say what it made of it; the error if it failed the connection.

    A truncated frame is fed too: the receiver checks a header, and the UTF-8
    of a text frame, before the whole frame has arrived, as it does on a socket.
    """
    events = receiver.feed(frame)
    if header.rsv1 and deflate and inflated:
        out += _payload_lines("inflated (00 00 ff ff appended, then raw DEFLATE)", inflated[-1], header.opcode,
                              "RFC 7692 §7.2.2")
    return _outcome(events, out)


def _summary(header: FrameHeader) -> str:
    name = OPCODES[header.opcode].split(":")[0] if header.opcode in OPCODES else f"reserved opcode {header.opcode:#x}"
    kind = "final" if header.fin else "non-final"
    return f"{kind} {name} frame, {'masked' if header.masked else 'unmasked'}"


def _bits(byte: int) -> str:
    return f"{byte >> 4:04b} {byte & 0xF:04b}"


def _hex(data: bytes) -> str:
    if len(data) <= SHOWN:
        return data.hex(" ")
    return f"{data[:SHOWN // 2].hex(' ')} ... {data[-8:].hex(' ')}"


def _fields(header: FrameHeader, frame: bytes, deflate: bool, kind: int) -> list[str]:
    """Every field of the frame, bits first, then the payload as far as it is here."""
    lines = _first_byte(header, frame[0], deflate) + _second_byte(header, frame[1])
    offset = 2
    if header.length_bits > 7:
        width = header.length_bits // 8
        lines.append(f"  bytes 2-{1 + width}  {frame[2 : 2 + width].hex(' ')}  the length as a"
                     f" {header.length_bits}-bit unsigned integer, network order: {header.length} (§5.2)")
        offset += width
    if header.mask_key is not None:
        lines.append(f"  bytes {offset}-{offset + 3}  {header.mask_key.hex(' ')}  masking key: a fresh random"
                     " key per frame (§5.3)")
        offset += 4
    return lines + _payload(header, frame[offset:], offset, deflate, kind)


def _first_byte(header: FrameHeader, b0: int, deflate: bool) -> list[str]:
    opcode = OPCODES.get(header.opcode, "reserved: no meaning is defined, receivers must fail (§5.2)")
    if header.rsv1:
        rsv1 = "compressed message (permessage-deflate, RFC 7692 §6)" if deflate else (
            "set, but no extension was agreed (--deflate if permessage-deflate was)")
    else:
        rsv1 = "not compressed" if deflate else "0 unless an extension defines it (§5.2)"
    fin = "the last frame of its message (§5.2)" if header.fin else "more fragments follow (§5.4)"
    return [
        f"  byte 0     {b0:02x}  {_bits(b0)}",
        f"    FIN      bit 0      {header.fin:d}     {fin}",
        f"    RSV1     bit 1      {header.rsv1:d}     {rsv1}",
        f"    RSV2     bit 2      {header.rsv2:d}     0 unless an extension defines it (§5.2)",
        f"    RSV3     bit 3      {header.rsv3:d}     0 unless an extension defines it (§5.2)",
        f"    opcode   bits 4-7   {header.opcode:04b}  {header.opcode:#x} = {opcode}",
    ]


def _second_byte(header: FrameHeader, b1: int) -> list[str]:
    mask = ("the payload is masked: clients mask every frame (§5.1, §5.3)" if header.masked
            else "not masked: servers never mask (§5.1)")
    return [
        f"  byte 1     {b1:02x}  {_bits(b1)}",
        f"    MASK     bit 8      {header.masked:d}     {mask}",
        f"    length   bits 9-15  {b1 & 0x7F:07b} " + _length_meaning(header, b1 & 0x7F),
    ]


def _payload(header: FrameHeader, payload: bytes, offset: int, deflate: bool, kind: int) -> list[str]:
    if header.length == 0:
        return ["  no payload"]
    where = f"bytes {offset}-{offset + header.length - 1}"
    masked = ", masked" if header.masked else ""
    if len(payload) < header.length:
        shown = f": {_hex(payload)}" if payload else ""
        return [f"  {where}  payload, {header.length} bytes{masked}, {len(payload)} of them here{shown}"]
    lines = [f"  {where}  payload, {header.length} bytes{masked}: {_hex(payload)}"]
    if header.mask_key is not None:
        payload = apply_mask(payload, header.mask_key)
        lines.append(f"    unmasked: {_hex(payload)}  (byte i XOR key[i mod 4], §5.3)")
    if header.rsv1 and deflate:
        return lines  # what it inflates to follows, from the receiver
    return lines + _payload_lines("payload", payload, kind, "")


def _length_meaning(header: FrameHeader, field: int) -> str:
    if header.length_bits == 7:
        return f"{field}: the payload length itself (7 bits: 0-125, §5.2)"
    width = header.length_bits // 8
    return f"{field}: the length follows in the next {width} bytes ({header.length_bits} bits, §5.2)"


def _payload_lines(label: str, payload: bytes, opcode: int, section: str) -> list[str]:
    """The payload in words: text, a close code and reason, or bytes."""
    cite = f" ({section})" if section else ""
    if opcode == Opcode.CLOSE:
        return [f"    {label}{cite}: " + _close_meaning(payload)]
    if opcode in (Opcode.TEXT, Opcode.CONT, Opcode.PING, Opcode.PONG):
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            if opcode == Opcode.TEXT or opcode == Opcode.CONT:
                return [f"    {label}{cite}: not UTF-8 on its own (a fragment may end inside a character)"]
            return [f"    {label}{cite}: {_hex(payload)}"]
        shown = text if len(text) <= SHOWN else text[:SHOWN] + "..."
        return [f"    {label} as text{cite}: {shown!r}"]
    return [f"    {label}{cite}: {len(payload)} bytes of binary data"]


def _close_meaning(payload: bytes) -> str:
    if not payload:
        return "empty: a close without a status code, reported as 1005 (§7.1.5)"
    if len(payload) == 1:
        return "one byte: too short for a status code (§5.5.1)"
    code = int.from_bytes(payload[:2], "big")
    reason = payload[2:].decode(errors="replace")
    return f"code {code} ({code_meaning(code)}), reason {reason!r} (§5.5.1, §7.4)"


def code_meaning(code: int) -> str:
    """A close code in words: its meaning, or the range it belongs to (§7.4)."""
    if code in CLOSE_CODES:
        return CLOSE_CODES[code]
    if 3000 <= code <= 3999:
        return "registered for libraries and frameworks (§7.4.2)"
    if 4000 <= code <= 4999:
        return "private use: the application's own meaning (§7.4.2)"
    if code in (1005, 1006, 1015):
        return "reserved for reports, never sent on the wire (§7.4.1)"
    assert not is_valid_close_code(code)
    return "not a valid close code (§7.4)"


def _outcome(events: list[Event], out: list[str]) -> str | None:
    """Say what the receiver made of the frame; the error if it failed the connection."""
    for opcode, value in events:
        if opcode is None:
            assert isinstance(value, ProtocolError)
            code = value.code
            out.append(f"  error: {value}")
            out.append(f"  the receiver fails the connection with close code {code} ({code_meaning(code)})")
            return str(value)
        if opcode == Opcode.CLOSE:
            assert isinstance(value, Close)
            out.append(f"  => the peer's close: {value}; the receiver answers with a close frame (§5.5.1)")
        elif opcode == Opcode.PING:
            out.append("  => a ping: the receiver answers with a pong carrying the same payload (§5.5.2)")
        elif opcode == Opcode.PONG:
            out.append("  => a pong: it answers a ping (or is a unidirectional heartbeat, §5.5.3)")
        elif isinstance(value, str):
            shown = value if len(value) <= SHOWN else value[:SHOWN] + "..."
            out.append(f"  => message: text {shown!r} ({len(value.encode())} bytes)")
        else:
            assert isinstance(value, bytes)
            out.append(f"  => message: binary, {len(value)} bytes")
    return None


def explain_observed(frame: Frame, label: str, *, deflate: bool) -> str:
    """Explain a frame that :mod:`common.inspector` saw pass, field by field, as :func:`explain_frames` does.

    The inspector keeps a frame's header and the first :data:`~common.observer.PREVIEW`
    bytes of its payload (``frame.wire``), and what its receiver made of it
    (:class:`~common.observer.Frame`): the fields are read from those bytes
    by the same code as ``explain``'s; the verdict (an error, a close, the
    inflated size) is the one the receiver reached when the frame passed,
    with its connection's history (its decompression context included).
    """
    header = frame.header
    out = [f"{label}: {_summary(header)}, {header.size + header.length} bytes, from the {frame.side}"]
    kind = frame.message if header.opcode == Opcode.CONT and frame.message is not None else header.opcode
    out += _fields(header, frame.wire, deflate, kind)
    payload = len(frame.wire) - header.size
    if payload < header.length:
        out.append(f"    the inspector keeps the first {PREVIEW} bytes of each payload")
        if header.masked and not frame.compressed and frame.preview:
            out += _payload_lines(f"first {len(frame.preview)} bytes, unmasked", frame.preview, kind, "")
    if frame.compressed and frame.inflated is not None:
        out += _payload_lines(f"inflated ({frame.inflated} bytes; 00 00 ff ff appended to the message's last"
                              " frame, then raw DEFLATE)", frame.preview, kind, "RFC 7692 §7.2.2")
    if frame.seen < header.length and frame.error is None:
        out.append(f"  cut short: TCP ended after {frame.seen} of its {header.length} payload bytes (§5.2)")
    events: list[Event] = []
    if frame.error is not None:
        events.append((None, frame.error))
    elif frame.close is not None:
        events.append((Opcode.CLOSE, frame.close))
    elif header.opcode in (Opcode.PING, Opcode.PONG):
        events.append((header.opcode, frame.preview))
    elif header.fin and frame.message is not None:
        name = "text" if frame.message == Opcode.TEXT else "binary"
        out.append(f"  => the last frame of its message: the receiver hands the {name} message to the application")
    _outcome(events, out)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- wire-view lines

# One line of the wire view (common.connection, -v/-vv), as the log writes it:
#   2026-12-07 07:28:18,754 127.0.0.1:57324 < TEXT 'GET_TIME' [8 bytes, compressed to 10 bytes]
#   2026-12-07 07:28:18,754 127.0.0.1:57324     frame c1 8a ee 74 74 f9 9c 03 79 70 e1 85 80 8c eb 74
#   2026-12-07 07:28:18,754 127.0.0.1:57324     header 81 7e 00 c8 (then 200 payload bytes)
#   2026-12-07 07:28:18,754 127.0.0.1:57324     Sec-WebSocket-Extensions: permessage-deflate
# The time and the peer may be left out; any other line (the stage's own
# console lines, "peer: connection open on /") is not the wire view's and
# is passed over.
_WIRE_LINE = re.compile(
    r"\s*(?:\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[,.]\d+)?\s+)?"
    r"(?:(?P<peer>\S+)\s+)??"
    r"(?:(?P<mark>[<>=!%])\s(?P<what>.*)"
    r"|(?P<kind>frame|header)\s+(?P<hex>.*)"
    r"|(?P<name>[-!#$%&'*+.^_`|~0-9A-Za-z]+):\s(?P<value>.*))\Z")
_REQUEST_LINE = re.compile(r"[A-Za-z]+ \S+ HTTP/")
_HEADER_ONLY = re.compile(r"(?P<hex>[0-9a-fA-F ]*?)\s*\(then (?P<size>\d+) payload bytes\)\s*\Z")

#: Who sent a frame, from its line's mark and the side that wrote the log.
_SENDER = {("<", "server"): "client", ("<", "client"): "server", (">", "server"): "server", (">", "client"): "client"}


class _Connection:
    """What the wire view said so far of one connection (one peer in the log)."""

    def __init__(self) -> None:
        self.deflate: bool | None = None  # None: no handshake response in the lines
        self.in_response = False  # the lines that follow are the 101 response's headers
        self.mark = ""  # the < or > of the frame whose bytes come next
        self.directions: dict[str, _Direction] = {}
        self.unfinished: dict[str, str] = {}  # a message whose start was logged by its header alone
        self.failed = False


def _lines(pieces: Iterable[str]) -> Iterator[str]:
    """The lines of text that comes in pieces; none longer than :data:`HANDSHAKE_LIMIT` characters."""
    held = ""
    for piece in pieces:
        *lines, held = (held + piece).split("\n")
        yield from lines
        if len(held) > HANDSHAKE_LIMIT:
            raise ValueError(f"a line of more than {HANDSHAKE_LIMIT:,} characters: not a wire-view line"
                             " (a frame's line holds at most 131 bytes of hex)")
    if held:
        yield held


def explain_wire_view(
    text: str, *, side: str | None = None, deflate: bool = False, logged_by: str | None = None
) -> str:
    """Explain the frames in wire-view lines (the ``-vv`` log), each with its direction.

    Lines are read as the log writes them (the time and the peer may be left
    out, other lines are passed over). Each frame's sender comes from the
    ``<`` or ``>`` line before its bytes, relative to the side that wrote the
    log: ``logged_by``, else the handshake's lines (``< GET`` in a server's
    log, ``> GET`` in a client's), else the first such frame's MASK bit
    (clients mask, §5.1). A frame line with no ``<`` or ``>`` before it was
    sent by ``side``, else by whoever its MASK bit says. Each direction of
    each connection (peer) has its own receiver, hence its own decompression
    context: compressed messages are inflated with ``deflate``, or when the
    logged 101 response agreed on permessage-deflate (RFC 7692 §5). A frame
    logged by its header alone (``header ... (then N payload bytes)``) is
    named in one line: its payload is not in the log.
    """
    return "".join(_wire_lines(_lines([text]), side, deflate, logged_by))


def _wire_lines(lines: Iterable[str], side: str | None, deflate: bool, logged_by: str | None) -> Iterator[str]:
    """:func:`explain_wire_view` on lines that come one by one, a frame's lines at a time."""
    connections: dict[str, _Connection] = {}
    number = 0
    seen = False  # a line with a mark or a frame's bytes
    for line_number, line in enumerate(lines, 1):
        match = _WIRE_LINE.match(line.rstrip("\r"))
        if match is None:
            continue
        seen = seen or match["name"] is None
        peer = match["peer"] or ""
        connection = connections.setdefault(peer, _Connection())
        if match["mark"] is not None:
            what = match["what"].strip()
            connection.in_response = False
            if match["mark"] in "<>" and (_REQUEST_LINE.match(what) or what.startswith("HTTP/")):
                request = not what.startswith("HTTP/")
                # Who received a request, or sent a response, is the server.
                logged_by = logged_by or ("server" if (match["mark"] == "<") == request else "client")
                if request:  # a new connection: what an earlier one on this peer left is gone
                    connection = connections[peer] = _Connection()
                else:
                    connection.in_response = what.split()[1:2] == ["101"]
            elif match["mark"] in "<>":
                connection.mark = match["mark"]
                if connection.deflate is None and ", compressed to " in what:
                    _agreed(connection)  # the log's side inflated it: permessage-deflate was agreed
            elif what.startswith("connection is CLOSED"):
                del connections[peer]  # its state goes: memory does not grow with the connections in a log
        elif match["name"] is not None:
            if connection.in_response and match["name"].lower() == "sec-websocket-extensions":
                connection.deflate = _agrees_deflate(match["value"])
        else:
            connection.in_response = False
            mark, connection.mark = connection.mark, ""
            if connection.failed:
                continue
            number += 1
            out, logged_by = _wire_frame(number, line_number, peer, match["kind"], match["hex"], mark, connection,
                                         side, deflate, logged_by)
            yield "\n".join(out) + "\n"
    if not seen:
        raise ValueError("nothing to explain: no hex (such as 81 05 48 65 6c 6c 6f), no handshake (GET ... or"
                         " HTTP/1.1 ...) and no wire-view line (such as '< TEXT ...' or 'frame 81 05 ...')")
    if number == 0:
        yield ("nothing to explain: no frame's bytes in these lines (a 'frame ...' line, which the wire view"
               " writes with -vv)\n")
    for peer, connection in connections.items():
        yield from _unfinished(connection, peer)


def _agreed(connection: _Connection) -> None:
    """permessage-deflate turns out agreed on a connection whose handshake is not in the lines.

    A direction that has a receiver had no compressed message yet (it would
    have failed): it gets a fresh decompression context, as it had.
    """
    connection.deflate = True
    for direction in connection.directions.values():
        if not direction.deflate:
            direction.deflate = True
            direction.receiver.extension = PerMessageDeflate()


def _agrees_deflate(value: str) -> bool:
    """Whether a 101 response's Sec-WebSocket-Extensions value agrees on permessage-deflate."""
    try:
        return any(name.lower() == DEFLATE for name, _ in parse_extensions([value]))
    except NegotiationError:
        return False


def _wire_frame(
    number: int, line_number: int, peer: str, kind: str, text: str, mark: str, connection: _Connection,
    side: str | None, deflate: bool, logged_by: str | None,
) -> tuple[list[str], str | None]:
    """Frame ``number``, on line ``line_number``, explained; and who wrote the log, once a frame can tell."""
    where = f"frame {number} (line {line_number}{', ' + peer if peer else ''})"
    size: int | None = None
    if kind == "header":
        only = _HEADER_ONLY.match(text)
        if only is None:
            raise ValueError(f"line {line_number}: a header line ends with '(then N payload bytes)'")
        text, size = only["hex"], int(only["size"])
    try:
        data = parse_hex(text)
    except ValueError as exc:
        raise ValueError(f"line {line_number}: {exc}") from None
    try:
        header = parse_header(data[:_MAX_HEADER])
    except IncompleteHeader as exc:
        connection.failed = True
        return [f"{where}: {_truncated_header(exc)}"], logged_by
    if mark and logged_by is None:  # the first frame with a mark: its MASK bit says who sent it
        sender = "client" if header.masked else "server"
        logged_by = sender if mark == ">" else ("server" if sender == "client" else "client")
    sender = _SENDER[mark, logged_by] if mark and logged_by else side or ("client" if header.masked else "server")
    if sender not in connection.directions:
        agreed = deflate or bool(connection.deflate)
        connection.directions[sender] = _Direction(sender, agreed)
    direction = connection.directions[sender]
    if size is not None or (sender in connection.unfinished and header.opcode == Opcode.CONT):
        return [_not_in_the_log(where, f"frame {number}", header, size, connection, direction)], logged_by
    out, error = _frame(where, header, data, direction)
    if error is not None and _TOO_FAR_BACK in error and direction.gap:
        # The log's fault, not the peer's: go on with the next frames, from a fresh context.
        out.append("  the frames after it are explained as far as the log allows")
        fresh = connection.directions[sender] = _Direction(sender, direction.deflate)
        fresh.gap = direction.gap
    elif error is not None:
        if _TOO_FAR_BACK in error:
            out.append(f"  give all the lines of this connection from its handshake on, in order (the {sender}'s"
                       " messages from its first one)")
        out.append("  the connection is failed (§7.1.7): its later frames are not explained")
        connection.failed = True
    return out, logged_by


def _not_in_the_log(
    where: str, name: str, header: FrameHeader, size: int | None, connection: _Connection, direction: _Direction
) -> str:
    """The one line for frame ``name``, whose payload, or whose message's start, is not in the log.

    The direction goes on with a fresh receiver: the frames after the message
    can be explained, but not a compressed one that refers back to it.
    """
    sender = direction.side
    if size is not None:
        what = (f"logged by its header alone, {size} payload bytes not in the log (-vv shows a frame's bytes"
                " up to 125 bytes of payload): not explained in full")
        start = connection.unfinished.get(sender) or name
    else:
        what = f"the rest of a message whose start ({connection.unfinished[sender]}) is not in the log: not explained"
        start = connection.unfinished[sender]
    if header.opcode >= Opcode.CLOSE:  # a control frame: the message around it goes on
        return f"{where}: {_summary(header)}, from the {sender}, {what}"
    if header.fin:
        connection.unfinished.pop(sender, None)
    else:
        connection.unfinished[sender] = start
    fresh = _Direction(sender, direction.deflate)
    fresh.gap = start
    connection.directions[sender] = fresh
    return f"{where}: {_summary(header)}, from the {sender}, {what}"


def _unfinished(connection: _Connection, peer: str) -> Iterator[str]:
    """A line for each direction of a connection whose lines end inside a fragmented message, at their end."""
    if connection.failed:
        return
    for sender, direction in connection.directions.items():
        if direction.receiver.opcode is not None:
            on = f" on {peer}" if peer else ""
            yield (f"the lines{on} end inside a fragmented message from the {sender}: its last frame (FIN 1)"
                   " is not in them (§5.4)\n")


# --------------------------------------------------------------------------- handshakes


def explain_handshake(text: str, *, key: str | None = None) -> str:
    """Explain an opening handshake's request or response (§4), given as text.

    For a response, ``key`` (the request's Sec-WebSocket-Key) lets the
    explanation check Sec-WebSocket-Accept the way a client does.
    """
    head = re.sub(r"\r?\n", "\r\n", text.strip()).encode("latin-1", errors="replace") + b"\r\n\r\n"
    if not head.startswith(b"HTTP/"):
        return _explain_request(head)
    return _explain_response(head, key)


def _explain_request(head: bytes) -> str:
    try:
        request = parse_request(head)
    except InvalidHandshake as exc:
        return f"not a valid HTTP/1.1 request: {exc}\nthe server answers {int(exc.status)} {exc.status.phrase}\n"
    out = [
        "an opening handshake request (RFC 6455 §4.1)",
        f"  {request.method} {request.path} HTTP/1.1",
        "    method GET and HTTP/1.1 or later (§4.1); the path names the endpoint, as a URL's path",
    ]
    out += _header_lines(request.headers)
    out.append("the server's checks (§4.2.1), as common.handshake.accept_request makes them:")
    try:
        accepted = accept_request(request, compression="deflate")
    except InvalidHandshake as exc:
        out.append(f"  refused: {exc}")
        out.append(f"  the server answers {int(exc.status)} {exc.status.phrase} and no WebSocket opens")
        return "\n".join(out) + "\n"
    out.append("  GET, Upgrade: websocket, Connection: Upgrade, one Host, version 13, a key of 16 bytes: all present")
    out += _offer_lines(request.headers, accepted.extension is not None)
    out.append("  accepted: the server answers 101 Switching Protocols with")
    out += [f"    {name}: {value}" for name, value in accepted.headers]
    out += _accept_walkthrough(request.headers["Sec-WebSocket-Key"])
    return "\n".join(out) + "\n"


def _explain_response(head: bytes, key: str | None) -> str:
    try:
        response = parse_response(head)
    except InvalidHandshake as exc:
        return f"not a valid HTTP/1.1 response: {exc}\n"
    out = ["an opening handshake response (RFC 6455 §4.2.2)", f"  HTTP/1.1 {response.status} {response.reason}"]
    if response.status == 101:
        out.append("    101 Switching Protocols: from the next byte on, both sides speak WebSocket frames")
    else:
        out += _not_101(response.status)
    out += _header_lines(response.headers)
    accept = response.headers.get("Sec-WebSocket-Accept")
    if key is not None and accept is not None:
        out += _accept_walkthrough(key)
        verdict = "matches: the client goes on" if accept == accept_key(key) else (
            "does NOT match: the client must fail the connection (§4.1)")
        out.append(f"  the answer's Sec-WebSocket-Accept {accept} {verdict}")
    elif accept is not None:
        out.append("  give the request's key (--key) to check Sec-WebSocket-Accept as the client does")
    return "\n".join(out) + "\n"


def _offer_lines(headers: Headers, compressed: bool) -> list[str]:
    """Each permessage-deflate offer: declined and why, or the one accepted (RFC 7692 §5, §7).

    The header's grammar is already checked (accept_request refuses it with
    400); the server here makes no demands, so the first valid offer wins.
    """
    offers = [params for name, params in parse_extensions(headers.get_all("Sec-WebSocket-Extensions"))
              if name.lower() == DEFLATE]
    lines = []
    taken = False
    for number, params in enumerate(offers, 1):
        shown = "; ".join([DEFLATE] + [name if value is None else f"{name}={value}" for name, value in params])
        if taken:
            lines.append(f"  permessage-deflate offer {number} ({shown}): not looked at, an earlier one was accepted")
            continue
        try:
            Params.parse(params, offer=True)
        except NegotiationError as exc:
            reason = str(exc).removeprefix(f"{DEFLATE}: ")
            lines.append(f"  permessage-deflate offer {number} ({shown}): declined, {reason}; the server tries"
                         " the next offer (RFC 7692 §7)")
            continue
        lines.append(f"  permessage-deflate offer {number} ({shown}): accepted, the first valid offer (RFC 7692 §5)")
        taken = True
    assert taken == compressed
    if offers and not taken:
        lines.append("  no permessage-deflate offer is acceptable: the connection opens without compression"
                     " (RFC 7692 §7)")
    return lines


def _not_101(status: int) -> list[str]:
    """What a client does with an answer other than 101: RFC 6455 for any client, WHATWG for browsers."""
    if 300 <= status < 400:
        may = "RFC 6455 §4.1 lets a client follow this redirect (Location), or not"
    elif status == 401:
        may = "RFC 6455 §4.1 lets a client authenticate (WWW-Authenticate) and try again"
    else:
        may = "RFC 6455 §4.1: the client handles it as any HTTP answer"
    return [
        "    not 101: no WebSocket opens on this answer; " + may,
        "    a browser fails the connection on any status but 101, redirects included (WHATWG WebSockets"
        " Standard, \"establish a WebSocket connection\")",
    ]


def _header_lines(headers: Headers) -> list[str]:
    lines = []
    for name, value in headers.items():
        role = HEADER_ROLES.get(name.lower(), "ordinary HTTP: no part in the WebSocket handshake")
        lines.append(f"  {name}: {value}")
        lines.append(f"    {role}")
    return lines


def _accept_walkthrough(key: str) -> list[str]:
    """Sec-WebSocket-Accept computed step by step (§1.3, §4.2.2)."""
    joined = key + GUID
    digest = hashlib.sha1(joined.encode()).digest()
    return [
        "Sec-WebSocket-Accept, step by step (§1.3, §4.2.2):",
        f"  1. the key, as text:         {key}",
        f"  2. append the GUID:          {joined}",
        f"  3. SHA-1 of those bytes:     {digest.hex(' ')}",
        f"  4. base64 of the 20 bytes:   {base64.b64encode(digest).decode()}",
    ]

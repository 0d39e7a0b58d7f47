"""The client side of RFC 6455 (and RFC 7692 permessage-deflate), just enough for the load generator.

Standard library only, and deliberately independent of common/: the benchmark must not
measure a library with itself.  Everything here favours doing the expensive work once,
up front (masking, compressing), so that the measurement loop only moves bytes.

What the load generator needs:

* `handshake_request()` / `check_handshake_response()`: the opening handshake, with the
  Sec-WebSocket-Accept check and, optionally, a permessage-deflate offer.
* `client_frame()`: one masked frame (the precomputed send rings are built from these).
* `server_frame()`: what an uncompressed server sends back for a message; the fast
  verification path compares received bytes against a ring of these.
* `FrameParser`: the general path, for compressed replies, or for any server that frames
  its replies differently from the canonical single unfragmented frame.
"""

import base64
import hashlib
import os
import struct
import zlib

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

# RFC 7692 section 7.2.1: a compressed message has its final 00 00 ff ff removed.
DEFLATE_TAIL = b"\x00\x00\xff\xff"

# What we offer.  client_no_context_takeover is a promise that *we* compress every message on
# its own, which is what lets the generator precompute its compressed frames; the server may
# still use context takeover for its own direction, and we decompress that statefully.
DEFLATE_OFFER = "permessage-deflate; client_no_context_takeover; client_max_window_bits"


class ProtocolError(Exception):
    """The server did something a WebSocket server must not do (or that we did not expect)."""


# --------------------------------------------------------------------------- handshake

def handshake_request(host, port, path="/", deflate=False):
    """Return (request bytes, expected Sec-WebSocket-Accept value)."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append(f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return request, accept_value(key)


def accept_value(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def check_handshake_response(head, expected_accept, deflate_offered):
    """Validate a 101 response head (bytes up to and excluding the blank line).

    Returns the negotiated `DeflateParams`, or None without compression.
    Raises ProtocolError on anything a conforming server would not send.
    """
    text = head.decode("latin-1")
    status_line, *header_lines = text.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or parts[0] != "HTTP/1.1" or parts[1] != "101":
        raise ProtocolError(f"expected 101 Switching Protocols, got {status_line!r}")
    headers = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"malformed header line {line!r}")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if [v.lower() for v in headers.get("upgrade", [])] != ["websocket"]:
        raise ProtocolError(f"bad Upgrade header: {headers.get('upgrade')}")
    connection_tokens = {t.strip().lower() for v in headers.get("connection", []) for t in v.split(",")}
    if "upgrade" not in connection_tokens:
        raise ProtocolError(f"bad Connection header: {headers.get('connection')}")
    if headers.get("sec-websocket-accept") != [expected_accept]:
        raise ProtocolError(f"bad Sec-WebSocket-Accept: {headers.get('sec-websocket-accept')}")
    extensions = [e.strip() for v in headers.get("sec-websocket-extensions", []) for e in v.split(",") if e.strip()]
    if not extensions:
        return None
    if not deflate_offered or len(extensions) != 1:
        raise ProtocolError(f"server accepted extensions we did not offer: {extensions}")
    return DeflateParams.from_response(extensions[0])


class DeflateParams:
    """The permessage-deflate parameters the server chose (RFC 7692 section 7.1)."""

    def __init__(self, client_max_window_bits=15, server_no_context_takeover=False):
        self.client_max_window_bits = client_max_window_bits
        self.server_no_context_takeover = server_no_context_takeover

    @classmethod
    def from_response(cls, extension):
        name, *params = [p.strip() for p in extension.split(";")]
        if name != "permessage-deflate":
            raise ProtocolError(f"server accepted unknown extension {name!r}")
        result = cls()
        for param in params:
            key, _, value = param.partition("=")
            key, value = key.strip(), value.strip().strip('"')
            if key == "client_max_window_bits":
                if not value.isdigit() or not 8 <= int(value) <= 15:
                    raise ProtocolError(f"bad client_max_window_bits {value!r}")
                # zlib refuses a raw-deflate window of 8 bits; 9 is the smallest it writes.
                result.client_max_window_bits = max(9, int(value))
            elif key == "server_no_context_takeover":
                result.server_no_context_takeover = True
            elif key in ("client_no_context_takeover", "server_max_window_bits"):
                pass  # we never use context takeover; a 15-bit inflater reads any window
            else:
                raise ProtocolError(f"unknown permessage-deflate parameter {key!r}")
        return result

    def compress(self, payload):
        """Compress one message on its own (no context takeover), tail stripped."""
        compressor = zlib.compressobj(6, zlib.DEFLATED, -self.client_max_window_bits)
        data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(DEFLATE_TAIL)
        return data[: -len(DEFLATE_TAIL)]

    def new_inflater(self):
        return zlib.decompressobj(-15)


# --------------------------------------------------------------------------- frames

def mask(payload, key):
    """XOR payload with the 4-byte key, as big integers (fast enough for 1 MiB, done once)."""
    n = len(payload)
    if n == 0:
        return b""
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(n, "little")


def _header(first_byte, length, masked):
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return struct.pack("!BB", first_byte, mask_bit | length)
    if length < 1 << 16:
        return struct.pack("!BBH", first_byte, mask_bit | 126, length)
    return struct.pack("!BBQ", first_byte, mask_bit | 127, length)


def client_frame(opcode, payload, rsv1=False):
    """One complete, final, masked frame with a fresh random masking key."""
    key = os.urandom(4)
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    return _header(first, len(payload), True) + key + mask(payload, key)


def server_frame(opcode, payload):
    """The canonical unmasked frame a server sends for an uncompressed message."""
    return _header(0x80 | opcode, len(payload), False) + payload


def close_frame(code=1000, reason=b""):
    return client_frame(OP_CLOSE, struct.pack("!H", code) + reason)


class FrameParser:
    """Incremental parser for server-to-client frames.

    feed(data) returns a list of (opcode, payload) for every complete message (fragments
    reassembled, permessage-deflate undone) and every control frame, in order.
    """

    def __init__(self, deflate=None):
        self.buf = bytearray()
        self.deflate = deflate
        self.inflater = deflate.new_inflater() if deflate else None
        self.fragments = None  # list of payloads while a fragmented message is in progress
        self.fragment_opcode = None
        self.fragment_compressed = False

    def feed(self, data):
        buf = self.buf
        buf += data
        out = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b1 & 0x80:
                raise ProtocolError("server sent a masked frame")
            length = b1 & 0x7F
            header = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 4], "big")
                header = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                header = 10
            if end - pos < header + length:
                break
            payload = bytes(buf[pos + header:pos + header + length])
            pos += header + length
            self._frame(b0, payload, out)
        del buf[:pos]
        return out

    def _frame(self, b0, payload, out):
        fin, rsv1, opcode = b0 & 0x80, b0 & 0x40, b0 & 0x0F
        if b0 & 0x30:
            raise ProtocolError("server set RSV2/RSV3")
        if opcode >= 0x8:  # control frame: never fragmented, never compressed
            if not fin or rsv1 or len(payload) > 125:
                raise ProtocolError(f"invalid control frame (opcode {opcode})")
            out.append((opcode, payload))
            return
        if rsv1 and not self.deflate:
            raise ProtocolError("RSV1 set without permessage-deflate")
        if opcode == OP_CONT:
            if self.fragments is None:
                raise ProtocolError("continuation frame without a message in progress")
            if rsv1:
                raise ProtocolError("RSV1 set on a continuation frame")
            self.fragments.append(payload)
        elif opcode in (OP_TEXT, OP_BINARY):
            if self.fragments is not None:
                raise ProtocolError("new data frame while a fragmented message is in progress")
            self.fragments = [payload]
            self.fragment_opcode = opcode
            self.fragment_compressed = bool(rsv1)
        else:
            raise ProtocolError(f"reserved opcode {opcode}")
        if fin:
            message = b"".join(self.fragments)
            if self.fragment_compressed:
                message = self._inflate(message)
            out.append((self.fragment_opcode, message))
            self.fragments = None

    def _inflate(self, data):
        if self.deflate.server_no_context_takeover:
            self.inflater = self.deflate.new_inflater()
        try:
            return self.inflater.decompress(data + DEFLATE_TAIL)
        except zlib.error as exc:
            raise ProtocolError(f"cannot inflate a compressed message: {exc}") from None

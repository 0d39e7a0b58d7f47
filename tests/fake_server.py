"""The scripted WebSocket server of tests/test_client_conformance.py.

``FakeServer`` is the server end of one TCP connection, on asyncio streams,
with nothing of common's server: it reads the client's opening request,
answers 101 with a Sec-WebSocket-Accept it computes itself (RFC 6455 §4.2.2),
writes whatever bytes a test case scripts, unmasked as a server must (5.1),
and reads the client's frames, checking each one against the rules for a
client (``FakeServer.recv_frame``). With permessage-deflate accepted
(``handshake(deflate=...)``) it inflates the client's messages with exactly the
window the client was allowed (``Inflater``) and compresses its own
(``Deflater``). ``ClientResult`` records what the client under test did.

Every read is bounded by TIMEOUT; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
import zlib
from typing import Any

from common import ClientConnection, ConnectionClosed, State

try:                                    # tests/ as a package or as a plain directory
    from . import rawws
except ImportError:
    import rawws

CONT, TEXT, BINARY, CLOSE = rawws.CONT, rawws.TEXT, rawws.BINARY, rawws.CLOSE
RSV1 = rawws.RSV1
close_payload, short, opname = rawws.close_payload, rawws.short, rawws.opname

TIMEOUT = rawws.TIMEOUT                 # 5 s: the bound of every single wait

# Loop turns given to the client before checking it has not closed TCP on its
# own (7.1.1). Turns, not seconds: any callback the client scheduled runs.
SETTLE_TURNS = 10

TAIL = b"\x00\x00\xff\xff"              # RFC 7692 §7.2.1: what a sync flush ends with


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = False,
          length_form: int | None = None) -> bytes:
    """One server frame: unmasked unless a case asks otherwise (5.1)."""
    return rawws.build_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, length_form=length_form)


def close_frame(code: int | None = None, reason: bytes | str = b"") -> bytes:
    """A server's Close frame; ``code`` None: an empty body (no status code)."""
    return frame(CLOSE, close_payload(code, reason))


@dataclasses.dataclass
class ClientFrame:
    """One frame the client sent, as FakeServer.recv_frame read and checked it."""
    fin: bool
    rsv: int
    opcode: int
    payload: bytes                      # unmasked
    key: bytes                          # the 4-byte masking key
    header: bytes                       # the header as on the wire, key included

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    def __repr__(self) -> str:
        return (f"ClientFrame({opname(self.opcode)}, fin={self.fin}, rsv={self.rsv}, "
                f"payload={short(self.payload)})")


@dataclasses.dataclass
class Request:
    """The client's opening request as the fake server read it."""
    line: str
    headers: list[tuple[str, str]]
    raw: bytes

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def single(self, name: str) -> str:
        values = self.get_all(name)
        assert len(values) == 1, f"4.1: expected exactly one {name} header, got {values} in {self.raw!r}"
        return values[0]

    def tokens(self, name: str) -> list[str]:
        return [t.strip().lower() for v in self.get_all(name) for t in v.split(",") if t.strip()]


class ClientClosed(AssertionError):
    """The client closed the TCP connection when the script expected more."""


class Inflater:
    """Inflate the client's compressed messages (RFC 7692 §7.2.2) with exactly the window
    the client was allowed: one that used a larger window, or kept its context after
    promising not to, fails here with "invalid distance too far back"."""

    def __init__(self, bits: int, no_context_takeover: bool):
        self.bits, self.no_context_takeover = bits, no_context_takeover
        self.inflater: Any = None

    def __call__(self, data: bytes) -> bytes:
        if self.inflater is None:
            self.inflater = zlib.decompressobj(-self.bits)
        try:
            out = self.inflater.decompress(data + TAIL)
        except zlib.error as exc:
            raise AssertionError(f"RFC 7692 §7.2.2: the client's compressed message does not inflate "
                                 f"with a {self.bits}-bit window"
                                 f"{' and no context takeover' if self.no_context_takeover else ''}: {exc}") from None
        if self.no_context_takeover or self.inflater.eof:
            self.inflater = None
        return out


class Deflater:
    """Compress the server's messages (RFC 7692 §7.2.1) as the answer said it would."""

    def __init__(self, bits: int, no_context_takeover: bool):
        # zlib has no 8-bit raw deflate window; 9 never refers back farther than 250 bytes.
        self.bits, self.no_context_takeover = max(9, bits), no_context_takeover
        self.deflater: Any = None

    def __call__(self, data: bytes) -> bytes:
        if self.deflater is None or self.no_context_takeover:
            self.deflater = zlib.compressobj(6, zlib.DEFLATED, -self.bits)
        out = self.deflater.compress(data) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(TAIL)
        return out[:-4]


@dataclasses.dataclass
class ClientResult:
    """What the client under test did, for the assertions after the case."""
    ws: ClientConnection | None = None
    error: BaseException | None = None          # what connect() raised
    received: list[str | bytes] = dataclasses.field(default_factory=list)
    closed: ConnectionClosed | None = None      # what recv() or send() raised at the end
    dialled: tuple[str, int] | None = None      # (host, port) the client opened TCP to
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


class FakeServer:
    """The server end of one connection, driven by a case's script. Reads are bounded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: ClientResult):
        self.reader, self.writer, self.client = reader, writer, client
        self.request: Request | None = None
        self.keys: list[bytes] = []             # every masking key the client used
        self.inflate: Inflater | None = None
        self.deflate: Deflater | None = None

    # ------------------------------------------------------------ opening handshake

    async def read_request(self) -> Request:
        try:
            async with asyncio.timeout(TIMEOUT):
                head = await self.reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise AssertionError(f"timeout: no complete opening request within {TIMEOUT} s") from None
        except asyncio.IncompleteReadError as exc:
            raise ClientClosed(f"the client closed TCP before finishing its request: {exc.partial!r}") from None
        text = head[:-4].decode("latin-1")
        line, *lines = text.split("\r\n")
        headers = []
        for header_line in lines:
            name, sep, value = header_line.partition(":")
            assert sep and name and name == name.strip() and name.isascii() and " " not in name, \
                f"4.1 / RFC 7230 3.2: malformed header line {header_line!r}"
            headers.append((name, value.strip(" \t")))
        self.request = Request(line, headers, head)
        return self.request

    async def handshake(self, *, extensions: str | None = None, protocol: str | None = None,
                        deflate: dict[str, Any] | None = None, then: bytes = b"") -> Request:
        """Read the request and answer 101 as 4.2.2 says; `then` goes in the same write.

        deflate: permessage-deflate parameters to accept (RFC 7692 §7.1), which also
        sets up the inflater and deflater of this connection.
        """
        request = await self.read_request()
        key = request.single("Sec-WebSocket-Key")
        lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Accept: {rawws.accept_for(key)}"]
        if deflate is not None:
            assert "permessage-deflate" in request.get_all("Sec-WebSocket-Extensions")[0], request.raw
            extensions = deflate_answer(deflate)
            self.inflate = Inflater(deflate.get("client_max_window_bits") or 15,
                                    bool(deflate.get("client_no_context_takeover")))
            self.deflate = Deflater(deflate.get("server_max_window_bits") or 15,
                                    bool(deflate.get("server_no_context_takeover")))
        if extensions is not None:
            lines.append(f"Sec-WebSocket-Extensions: {extensions}")
        if protocol is not None:
            lines.append(f"Sec-WebSocket-Protocol: {protocol}")
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + then)
        return request

    # ------------------------------------------------------------ writing

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        try:
            async with asyncio.timeout(TIMEOUT):
                await self.writer.drain()
        except TimeoutError:
            raise AssertionError(f"timeout: the client read nothing for {TIMEOUT} s") from None

    async def send_split(self, data: bytes, sizes: int | list[int]) -> None:
        """Write `data` in several writes, giving the client's loop a turn after each one."""
        if isinstance(sizes, int):
            sizes = [sizes] * ((len(data) + sizes - 1) // sizes)
        pos = 0
        for n in sizes:
            if pos >= len(data):
                break
            await self.send(data[pos:pos + n])
            pos += n
            await asyncio.sleep(0)
        if pos < len(data):
            await self.send(data[pos:])

    # ------------------------------------------------------------ reading

    async def _read(self, n: int) -> bytes:
        try:
            async with asyncio.timeout(TIMEOUT):
                return await self.reader.readexactly(n)
        except TimeoutError:
            raise AssertionError(f"timeout: nothing from the client for {TIMEOUT} s "
                                 f"(waiting for {n} bytes)") from None
        except asyncio.IncompleteReadError as exc:
            raise ClientClosed(f"the client closed the TCP connection "
                               f"(have {len(exc.partial)} of {n} bytes needed)") from None
        except ConnectionResetError:
            raise ClientClosed("the client reset the TCP connection") from None

    async def recv_frame(self) -> ClientFrame:
        """One client frame, checked against the framing rules for a client (see module doc)."""
        head = await self._read(2)
        b0, b1 = head
        fin, rsv, opcode = bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF
        length, ext = b1 & 0x7F, b""
        if length == 126:
            ext = await self._read(2)
            length = struct.unpack("!H", ext)[0]
            assert length >= 126, f"5.2: the client used the 16-bit length form for {length} bytes (minimal: 7-bit)"
        elif length == 127:
            ext = await self._read(8)
            length = struct.unpack("!Q", ext)[0]
            assert length < 1 << 63, "5.2: the client sent a 64-bit length with the top bit set"
            assert length >= 65536, f"5.2: the client used the 64-bit length form for {length} bytes"
        assert b1 & 0x80, f"5.1/5.3: the client sent an unmasked {opname(opcode)} frame (a client MUST mask)"
        key = await self._read(4)
        compressed_ok = self.inflate is not None and opcode in (TEXT, BINARY)
        assert rsv == 0 or (rsv == RSV1 and compressed_ok), \
            f"5.2: the client set RSV bits {rsv:03b} on {opname(opcode)} without an extension allowing it"
        assert opcode in rawws.OPCODE_NAMES, f"5.2: the client used reserved opcode 0x{opcode:X}"
        if opcode >= CLOSE:
            assert fin, f"5.5: the client fragmented a {opname(opcode)} frame"
            assert length <= 125, f"5.5: the client sent a {length}-byte {opname(opcode)} frame"
        payload = rawws.mask_bytes(await self._read(length), key)
        self.keys.append(key)
        return ClientFrame(fin, rsv, opcode, payload, key, head + ext + key)

    async def recv_message(self) -> tuple[int, bytes, list[ClientFrame]]:
        """The next data message, reassembled (5.4) and inflated if compressed (RFC 7692)."""
        frames: list[ClientFrame] = []
        while True:
            f = await self.recv_frame()
            if not frames:
                assert f.opcode in (TEXT, BINARY), f"expected a data message from the client, got {f!r}"
            else:
                assert f.opcode == CONT, f"5.4: {f!r} inside the client's fragmented message"
                assert not f.rsv, f"RFC 7692 §6: RSV1 on a continuation frame: {f!r}"
            frames.append(f)
            if f.fin:
                break
        payload = b"".join(f.payload for f in frames)
        if frames[0].rsv & RSV1:
            assert self.inflate is not None
            payload = self.inflate(payload)
        return frames[0].opcode, payload, frames

    async def expect_message(self, opcode: int, payload: bytes) -> list[ClientFrame]:
        got_op, got, frames = await self.recv_message()
        assert got_op == opcode, f"expected a {opname(opcode)} echo, got {opname(got_op)} {short(got)}"
        if got != payload:
            n = next((i for i, (a, b) in enumerate(zip(got, payload)) if a != b), min(len(got), len(payload)))
            raise AssertionError(f"echo differs: expected {len(payload)} bytes, got {len(got)}; first "
                                 f"difference at byte {n}: expected {short(payload[n:n + 16])}, "
                                 f"got {short(got[n:n + 16])}")
        return frames

    async def expect_close(self, *codes: int | None) -> ClientFrame:
        """The client's next frame is a Close with one of `codes` (None: no status code).

        5.5.1: a 1-byte body is illegal and the reason is UTF-8. 7.1.1: "the client
        SHOULD wait for the server to close the connection": after giving the client's
        loop a few turns, it has not closed (or half-closed) TCP.
        """
        f = await self.recv_frame()
        assert f.opcode == CLOSE, f"expected the client's CLOSE {codes}, got {f!r}"
        assert len(f.payload) != 1, "5.5.1: the client's close frame has a 1-byte body"
        try:
            reason = f.payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise AssertionError(f"5.5.1: the client's close reason is not UTF-8: {f.payload!r}") from None
        assert f.close_code in codes, \
            f"expected close code {' or '.join(map(str, codes))} from the client, got {f.close_code} ({reason!r})"
        for _ in range(SETTLE_TURNS):
            await asyncio.sleep(0)
        assert not self.reader.at_eof(), "7.1.1: the client closed TCP right after its Close instead of " \
                                         "waiting for the server to close it"
        ws = self.client.ws
        if ws is not None:
            assert not ws.transport.is_closing(), "7.1.1: the client closed TCP instead of waiting for the server"
            assert ws.state is State.CLOSING, f"the client is {ws.state.name} after its Close, not CLOSING"
        return f

    async def finish(self, reply: bytes | None = None) -> None:
        """Close as a server does: write `reply` (a Close) if given, then close TCP first
        (7.1.1; a half-close, so that we can still read) and read until the client closes
        too. Nothing may arrive: the client's Close was its last frame (5.5.1)."""
        if reply is not None:
            self.writer.write(reply)
        self.writer.write_eof()
        await self.expect_eof("after its Close frame (5.5.1)")

    async def expect_eof(self, when: str = "") -> None:
        """Read until the client closes TCP (bounded); it must send nothing meanwhile."""
        rest = b""
        try:
            async with asyncio.timeout(TIMEOUT):
                while chunk := await self.reader.read(65536):
                    rest += chunk
        except TimeoutError:
            raise AssertionError(f"the client did not close the TCP connection within {TIMEOUT} s") from None
        except ConnectionResetError:
            pass
        assert not rest, f"the client sent {short(rest)} {when}".rstrip()

    async def close_normally(self) -> None:
        """Server-initiated close 1000: the client echoes 1000, then the server closes TCP."""
        await self.send(close_frame(1000))
        await self.expect_close(1000)
        await self.finish()


def deflate_answer(params: dict[str, Any]) -> str:
    """A Sec-WebSocket-Extensions answer accepting permessage-deflate with `params`."""
    parts = ["permessage-deflate"]
    for name, value in params.items():
        if value is True:
            parts.append(name)
        elif value is not None:
            parts.append(f"{name}={value}")
    return "; ".join(parts)

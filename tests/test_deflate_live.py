"""permessage-deflate (RFC 7692) over TCP: handshakes and compressed messages between live peers.

* negotiation through real handshakes: serve() and connect() agree, an
  offer with bad parameters is declined (the next one is taken), a header
  that breaks the grammar gets HTTP 400, connect() refuses a bad answer;
* conformance in the spirit of Autobahn 12.x/13.x: message sizes times
  parameter combinations, echoed by ``python3 -m common echo`` to a client
  over a raw socket that does permessage-deflate itself, with zlib or with
  the fixed-Huffman encoder of deflate_util.py (so that the server inflates a
  stream that zlib's compressor did not make); protocol errors (RSV1 where it
  may not be, bad compressed data, bombs) against that server;
* serve() against connect() in-process: every parameter combination, the
  server's demands, a zip bomb, the wire view and broadcast's encode-once groups.

The same decisions without sockets are in test_deflate_unit.py. Every wait is
bounded (rawws.TIMEOUT for sockets, helpers.BOUND for asyncio).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import os
import socket
import zlib
from pathlib import Path

import pytest

from common import ConnectionClosedError, NegotiationError, broadcast, connect
from common import deflate
from common.deflate import PerMessageDeflate, client_accept, client_offer, server_negotiate

try:                                    # tests/ as a package or as a plain directory
    from . import rawws
    from .deflate_util import (BINARY, CLOSE, CONT, MALFORMED_OFFERS, PING, PONG, RSV1, TAIL, TEXT, MiB,
                               agreed, binary_payload, fixed_huffman_deflate, frame, text_payload, threshold)
    from .helpers import BOUND, echo, run, serving
except ImportError:
    import rawws
    from deflate_util import (BINARY, CLOSE, CONT, MALFORMED_OFFERS, PING, PONG, RSV1, TAIL, TEXT, MiB,
                              agreed, binary_payload, fixed_huffman_deflate, frame, text_payload, threshold)
    from helpers import BOUND, echo, run, serving

REPO_ROOT = Path(__file__).resolve().parent.parent


# ============================================= negotiation through handshakes


@contextlib.contextmanager
def negotiation(monkeypatch, client: dict | None = None, server: dict | None = None):
    """Configure the parameters serve() and connect() negotiate with.

    serve() and connect() take compression="deflate" with the defaults; the
    options of deflate.py's functions are set here, for the tests only.
    """
    with monkeypatch.context() as patch:
        if client is not None:
            patch.setattr(deflate, "client_offer", functools.partial(client_offer, **client))
            patch.setattr(deflate, "client_accept", functools.partial(client_accept, **client))
        if server is not None:
            patch.setattr(deflate, "server_negotiate", functools.partial(server_negotiate, **server))
        yield


def test_default_handshake_negotiates_deflate():
    """serve() and connect() agree on permessage-deflate by default, with browser-like parameters."""

    async def main():
        async with serving() as server, connect(server.url) as ws:
            assert ws.response_headers["Sec-WebSocket-Extensions"] == "permessage-deflate"
            assert agreed(ws.extension) == (False, False, 15, 15)
            (peer,) = server.connections
            assert peer.request_headers["Sec-WebSocket-Extensions"] == "permessage-deflate; client_max_window_bits"
            assert agreed(peer.extension) == (False, False, 15, 15)

    run(main(), bound=6 * BOUND)


@pytest.mark.parametrize("side", ["client", "server"])
def test_compression_none_disables(side):
    """compression=None on either side: no extension, messages flow uncompressed."""

    async def main():
        async with serving(compression=None if side == "server" else "deflate") as server:
            async with connect(server.url, compression=None if side == "client" else "deflate") as ws:
                assert ws.extension is None
                assert "Sec-WebSocket-Extensions" not in ws.response_headers
                assert next(iter(server.connections)).extension is None
                await ws.send("x" * 1000)
                assert await ws.recv() == "x" * 1000

    run(main(), bound=6 * BOUND)


def http_get(port: int, extensions: str) -> tuple[int, dict[str, str], bytes]:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: {extensions}\r\n\r\n"
    )
    return rawws.http_request("127.0.0.1", port, request.encode())


# (the bad offer, what else the header holds, the answer expected: None for none)
DECLINED = [
    ("permessage-deflate; foo", ", permessage-deflate", "permessage-deflate"),
    ("permessage-deflate; server_max_window_bits=16", ", permessage-deflate; server_no_context_takeover",
     "permessage-deflate; server_no_context_takeover"),
    ("permessage-deflate; server_max_window_bits=07", ", permessage-deflate; client_max_window_bits=9",
     "permessage-deflate; client_max_window_bits=9"),
    ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", ", permessage-deflate",
     "permessage-deflate"),
    *((offer, "", None) for offer, _ in MALFORMED_OFFERS if offer.count("permessage-deflate") == 1),
]


@pytest.mark.parametrize("offer, rest, answer", DECLINED)
def test_server_declines_bad_offers(offer, rest, answer):
    """RFC 7692 §7: an offer with bad parameters is declined, not refused: the handshake gets 101,
    compression comes from the next offer if one is acceptable, and the messages are compressed."""

    async def main():
        async with serving(compression="deflate") as server:
            client = await asyncio.to_thread(DeflateClient, server.port, offer + rest)
            try:
                assert client.answer == answer
                payload = text_payload(4 * threshold())
                await asyncio.to_thread(client.send, TEXT, payload, compress=answer is not None)
                opcode, echoed, compressed = await asyncio.to_thread(client.recv)
                assert (opcode, echoed) == (TEXT, payload)
                assert (compressed is not None) == (answer is not None)
            finally:
                await asyncio.to_thread(client.close)

    run(main(), bound=6 * BOUND)


@pytest.mark.parametrize("value", ["permessage-deflate; foo, permessage-deflate;", "permessage-deflate; a=(b)"])
def test_server_answers_400_to_a_header_that_breaks_the_grammar(value):
    """RFC 6455 §9.1's grammar broken: no offer can be read, HTTP 400 says where; the server goes on serving."""

    async def main():
        async with serving(compression="deflate") as server:
            status, _, body = await asyncio.to_thread(http_get, server.port, value)
            assert status == 400
            assert "invalid Sec-WebSocket-Extensions header" in body.decode() and "position" in body.decode()
            async with connect(server.url) as ws:
                await ws.send("still fine")
                assert await ws.recv() == "still fine"

    run(main(), bound=6 * BOUND)


def test_server_without_compression_ignores_malformed_offers():
    """With compression=None the header is not even read: 101."""

    async def main():
        async with serving(compression=None) as server:
            status, headers, _ = await asyncio.to_thread(http_get, server.port, "permessage-deflate; foo")
            assert status == 101 and "sec-websocket-extensions" not in headers

    run(main(), bound=6 * BOUND)


@contextlib.asynccontextmanager
async def fake_server(extensions: list[str]):
    """Answers any WebSocket handshake with 101 and these Sec-WebSocket-Extensions values."""

    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Accept: {rawws.accept_for(key.decode())}"]
        lines += [f"Sec-WebSocket-Extensions: {value}" for value in extensions]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


@pytest.mark.parametrize(
    "extensions, compression",
    [
        (["x-webkit-deflate-frame"], "deflate"),
        (["permessage-deflate; client_max_window_bits=16"], "deflate"),
        (["permessage-deflate; server_max_window_bits"], "deflate"),
        (["permessage-deflate; foo=bar"], "deflate"),
        (["permessage-deflate", "permessage-deflate"], "deflate"),
        (["permessage-deflate"], None),
    ],
    ids=["unoffered", "cmwb-16", "smwb-no-value", "unknown", "twice", "not-offered"],
)
def test_connect_refuses_bad_answers(extensions, compression):
    """connect() raises NegotiationError, and does not open, when the server's answer is wrong."""

    async def main():
        async with fake_server(extensions) as url:
            with pytest.raises(NegotiationError):
                await connect(url, compression=compression)

    run(main(), bound=6 * BOUND)


# ================================================== against python3 -m common echo


@pytest.fixture(scope="module")
def small_echo_server():
    """The echo server with --max-size 1 MiB, for the bombs (``echo_server``, with the defaults, is in conftest.py)."""
    with rawws.EchoServer(REPO_ROOT, ["--max-size", str(MiB)]) as server:
        yield server


class DeflateClient:
    """A client over a raw socket doing permessage-deflate itself (RFC 7692 by hand).

    ``encoder`` is "zlib" (zlib with other settings than the server's: level
    9, memLevel 9) or "fixed" (the fixed-Huffman encoder of deflate_util.py). Server
    messages are inflated with zlib, honouring the agreed context takeover.
    """

    def __init__(self, port: int, offer: str | None, encoder: str = "zlib") -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=rawws.TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET /deflate HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if offer is not None:
            lines.append(f"Sec-WebSocket-Extensions: {offer}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, _, headers, rest = rawws.read_http_head(sock)
        assert status == 101, (status, headers)
        assert headers["sec-websocket-accept"] == rawws.accept_for(key)
        self.ws = rawws.RawWS(sock, leftover=rest)
        self.answer = headers.get("sec-websocket-extensions")
        params = dict((p.strip().partition("=")[::2]) for p in (self.answer or "").split(";")[1:])
        self.client_takeover = "client_no_context_takeover" not in params
        self.server_takeover = "server_no_context_takeover" not in params
        self.client_bits = int(params.get("client_max_window_bits") or 15)
        self.server_bits = int(params.get("server_max_window_bits") or 15)
        self.encoder = encoder
        self.compressor = None
        self.history = b""
        self.decompressor = None

    def compress(self, payload: bytes, encoder: str | None = None) -> bytes:
        encoder = encoder or self.encoder
        if encoder == "fixed":
            data = fixed_huffman_deflate(payload, self.client_bits, self.history if self.client_takeover else b"")
            if self.compressor is not None:
                raise AssertionError("do not mix encoders with context takeover")
            self.history = (self.history + payload)[-(1 << self.client_bits):]
            return data
        if self.history:
            raise AssertionError("do not mix encoders with context takeover")
        compressor = self.compressor
        if compressor is None:
            compressor = zlib.compressobj(9, zlib.DEFLATED, -max(9, self.client_bits), 9)
            if self.client_takeover:
                self.compressor = compressor
        data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(TAIL)
        return data[:-4]

    def send(self, opcode: int, payload: bytes, *, frames: int = 1, compress: bool = True) -> None:
        """One message, compressed unless told otherwise, cut into ``frames`` frames."""
        data = self.compress(payload) if compress else payload
        size = -(-len(data) // frames) if data else 1
        chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        chunks += [b""] * (frames - len(chunks))
        wire = b"".join(
            frame(opcode if i == 0 else CONT, chunk, fin=i == len(chunks) - 1, rsv=RSV1 if compress and i == 0 else 0)
            for i, chunk in enumerate(chunks)
        )
        self.ws.send_raw(wire)

    def recv_frame(self) -> tuple[bool, int, int, bytes]:
        take = self.ws._take
        b0, b1 = take(2)
        assert not b1 & 0x80, "server frames are never masked (RFC 6455 §5.1)"
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(take(2), "big")
        elif length == 127:
            length = int.from_bytes(take(8), "big")
        return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, take(length)

    def recv(self) -> tuple[int, bytes, int | None]:
        """The next data message: (opcode, payload, compressed size or None)."""
        opcode, parts, rsv1 = None, [], False
        while True:
            fin, rsv, op, payload = self.recv_frame()
            if op in (PING, PONG):
                assert rsv == 0, "control frames are never compressed (RFC 7692 §6)"
                continue
            assert op != CLOSE, f"unexpected close {payload!r}"
            if opcode is None:
                assert op in (TEXT, BINARY)
                assert rsv in (0, RSV1), f"RSV bits {rsv:03b}"
                opcode, rsv1 = op, rsv == RSV1
            else:
                assert op == CONT and rsv == 0, "RSV1 only on the first frame (RFC 7692 §6)"
            parts.append(payload)
            if fin:
                break
        data = b"".join(parts)
        if not rsv1:
            return opcode, data, None
        decompressor = self.decompressor or zlib.decompressobj(-self.server_bits)
        self.decompressor = decompressor if self.server_takeover else None
        return opcode, decompressor.decompress(data + TAIL), len(data)

    def close(self) -> None:
        self.ws.send_close(1000)
        self.ws.expect_close(1000)
        self.ws.close_socket()


CONFORMANCE_OFFERS = [
    ("permessage-deflate", "permessage-deflate"),
    ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
    ("permessage-deflate; server_no_context_takeover", "permessage-deflate; server_no_context_takeover"),
    ("permessage-deflate; client_no_context_takeover", "permessage-deflate; client_no_context_takeover"),
    ("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ("permessage-deflate; server_max_window_bits=9; client_max_window_bits=9",
     "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9"),
    ("permessage-deflate; server_max_window_bits=15; client_max_window_bits=15",
     "permessage-deflate; server_max_window_bits=15; client_max_window_bits=15"),
    ("permessage-deflate; server_max_window_bits=8; client_max_window_bits=8",
     "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8"),
    ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; "
     "client_max_window_bits=9",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; "
     "client_max_window_bits=9"),
]
CONFORMANCE_IDS = ["default", "browser", "server-nct", "client-nct", "both-nct", "bits9", "bits15", "bits8", "all"]
SIZES = [16, 200, 4096, 65536, MiB]


@pytest.mark.parametrize("encoder", ["zlib", "fixed"])
@pytest.mark.parametrize("offer, answer", CONFORMANCE_OFFERS, ids=CONFORMANCE_IDS)
def test_echo_conformance(echo_server, offer, answer, encoder):
    """Autobahn 12/13 in spirit: sizes x parameters, each message twice, echoed exactly.

    The server compresses every reply of COMPRESSION_THRESHOLD bytes or more
    (RSV1 on the first frame only); with server context takeover a repeat
    costs less than the first, without it the compressed bytes are identical.
    """
    client = DeflateClient(echo_server.port, offer, encoder)
    try:
        assert client.answer == answer
        for size in SIZES:
            for opcode, payload in ((TEXT, text_payload(size, size)), (BINARY, binary_payload(size, size))):
                sizes = []
                for _ in range(2):
                    # The fixed encoder is slow in Python: the large ones go uncompressed.
                    if size > 4096 and encoder == "fixed":
                        client.send(opcode, payload, compress=False)
                    else:
                        client.send(opcode, payload)
                    got_opcode, got, compressed = client.recv()
                    assert got_opcode == opcode and got == payload, f"{size} bytes differ"
                    assert (compressed is not None) == (size >= threshold()), f"{size}: compressed={compressed}"
                    sizes.append(compressed)
                if size == 200 and opcode == TEXT:
                    if client.server_takeover:
                        assert sizes[1] < sizes[0] // 2, f"no context takeover seen: {sizes}"
                    else:
                        assert sizes[1] == sizes[0], f"context taken over: {sizes}"
        client.close()
    finally:
        client.ws.close_socket()


@pytest.mark.parametrize("frames", [2, 3, 10, 100])
@pytest.mark.parametrize("offer", ["permessage-deflate", "permessage-deflate; client_no_context_takeover"])
def test_fragmented_compressed_messages(echo_server, offer, frames):
    """A compressed message across several frames (RSV1 on the first only) is reassembled, then inflated."""
    client = DeflateClient(echo_server.port, offer)
    try:
        for n, opcode in enumerate((TEXT, BINARY, TEXT)):
            payload = text_payload(3000, n) if opcode == TEXT else binary_payload(3000, n)
            client.send(opcode, payload, frames=frames)
            assert client.recv()[:2] == (opcode, payload)
        client.close()
    finally:
        client.ws.close_socket()


def test_fragmented_compressed_message_with_ping_between(echo_server):
    """A ping between the fragments of a compressed message is answered; the message arrives whole."""
    client = DeflateClient(echo_server.port, "permessage-deflate")
    try:
        payload = text_payload(2000)
        data = client.compress(payload)
        client.ws.send_raw(frame(TEXT, data[:100], fin=False, rsv=RSV1) + frame(PING, b"between"))
        fin, rsv, op, body = client.recv_frame()
        assert (fin, rsv, op, body) == (True, 0, PONG, b"between")
        client.ws.send_raw(frame(CONT, data[100:]))
        assert client.recv()[:2] == (TEXT, payload)
        client.close()
    finally:
        client.ws.close_socket()


@pytest.mark.parametrize("offer", ["permessage-deflate", "permessage-deflate; client_no_context_takeover"])
def test_bfinal_and_uncompressed_messages_mix(echo_server, offer):
    """Messages ending in a BFINAL block (§7.2.3.4) and plain messages (no RSV1) mix with compressed ones.

    A BFINAL block ends the DEFLATE stream: the next compressed message starts
    a new one, context takeover or not.
    """
    client = DeflateClient(echo_server.port, offer)
    try:
        for payload in (b"Hello", text_payload(500), b""):
            client.send(TEXT, payload)
            assert client.recv()[:2] == (TEXT, payload)
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            client.ws.send_raw(frame(BINARY, c.compress(payload) + c.flush(zlib.Z_FINISH), rsv=RSV1))
            client.compressor = None  # our stream ended with it
            assert client.recv()[:2] == (BINARY, payload)
            client.send(BINARY, payload, compress=False)
            assert client.recv()[:2] == (BINARY, payload)
            client.send(TEXT, payload)
            assert client.recv()[:2] == (TEXT, payload)
            client.ws.send_raw(frame(BINARY, fixed_huffman_deflate(payload, final=True), rsv=RSV1))
            client.compressor = None
            assert client.recv()[:2] == (BINARY, payload)
        client.close()
    finally:
        client.ws.close_socket()


def test_control_frames_never_compressed(echo_server):
    """Pings are answered with plain pongs, and the close frame is plain, with deflate negotiated."""
    client = DeflateClient(echo_server.port, "permessage-deflate")
    try:
        client.ws.send_frame(PING, b"p" * 125)
        assert client.recv_frame() == (True, 0, PONG, b"p" * 125)
        client.close()  # rawws checks the close frame: RSV bits 0
    finally:
        client.ws.close_socket()


@pytest.mark.parametrize(
    "make_wire, code",
    [
        (lambda c: frame(TEXT, c.compress(b"a" * 300)[:5], fin=False, rsv=RSV1) + frame(CONT, b"\x00", rsv=RSV1), 1002),
        (lambda c: frame(PING, b"x", rsv=RSV1), 1002),
        (lambda c: frame(BINARY, b"\xff\xff\xff\xff", rsv=RSV1), 1002),
        (lambda c: frame(TEXT, c.compress(b"\xc3\x28 invalid"), rsv=RSV1), 1007),
    ],
    ids=["rsv1-on-continuation", "rsv1-on-ping", "not-deflate", "bad-utf8-inside"],
)
def test_echo_fails_bad_compressed_frames(echo_server, make_wire, code):
    """RSV1 misplaced (§6) or data that is not DEFLATE: 1002; invalid UTF-8 once inflated: 1007."""
    client = DeflateClient(echo_server.port, "permessage-deflate")
    try:
        client.ws.send_raw(make_wire(client))
        client.ws.expect_close(code)
    finally:
        client.ws.close_socket()


def test_echo_rsv1_without_negotiation(echo_server):
    """A client that did not offer deflate may not set RSV1: 1002."""
    client = DeflateClient(echo_server.port, None)
    try:
        assert client.answer is None
        client.ws.send_raw(frame(TEXT, bytes.fromhex("f248cdc9c90700"), rsv=RSV1))
        client.ws.expect_close(1002)
    finally:
        client.ws.close_socket()


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no /proc/<pid>/status VmHWM here")


def test_echo_zip_bomb(small_echo_server):
    """64 MiB of zeros in ~64 KB against max_size 1 MiB: 1009, peak memory barely moves, others unharmed."""
    bystander = DeflateClient(small_echo_server.port, "permessage-deflate")
    attacker = DeflateClient(small_echo_server.port, "permessage-deflate")
    try:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = b"".join(c.compress(bytes(MiB)) for _ in range(64)) + c.flush(zlib.Z_SYNC_FLUSH)
        assert len(data) < 100_000
        bystander.send(TEXT, b"before")
        assert bystander.recv()[1] == b"before"
        before = peak_rss(small_echo_server.proc.pid)
        attacker.ws.send_raw(frame(BINARY, data[:-4], rsv=RSV1))
        attacker.ws.expect_close(1009)
        grown = peak_rss(small_echo_server.proc.pid) - before
        assert grown < 16 * MiB, f"the server's peak memory grew by {grown} bytes"
        bystander.send(TEXT, text_payload(MiB))
        assert bystander.recv()[1] == text_payload(MiB)
        bystander.close()
    finally:
        attacker.ws.close_socket()
        bystander.ws.close_socket()


def test_echo_compressed_frame_too_long(small_echo_server):
    """A compressed frame announcing 100 MiB fails with 1009 before its payload is sent."""
    client = DeflateClient(small_echo_server.port, "permessage-deflate")
    try:
        header, key = rawws.build_header(BINARY, 100 * MiB, rsv=RSV1)
        client.ws.send_raw(header + rawws.mask_bytes(b"\x00" * 1000, key))
        client.ws.expect_close(1009, reply=False)
    finally:
        client.ws.close_socket()


# ================================================== serve() against connect()

IN_PROCESS = [
    {},
    {"server_no_context_takeover": True},
    {"client_no_context_takeover": True},
    {"server_no_context_takeover": True, "client_no_context_takeover": True},
    {"server_max_window_bits": 9, "client_max_window_bits": 9},
    {"server_max_window_bits": 15, "client_max_window_bits": 15},
    {"server_max_window_bits": 8, "client_max_window_bits": 8},
    {"server_no_context_takeover": True, "client_no_context_takeover": True,
     "server_max_window_bits": 9, "client_max_window_bits": 9},
]


@pytest.mark.parametrize("options", IN_PROCESS, ids=CONFORMANCE_IDS[:1] + CONFORMANCE_IDS[2:])
def test_in_process_round_trips(monkeypatch, options):
    """connect() offering each combination to serve(): both agree, and every size echoes exactly, twice."""
    expected_client = (
        options.get("client_no_context_takeover", False),
        options.get("server_no_context_takeover", False),
        options.get("client_max_window_bits", 15),
        options.get("server_max_window_bits", 15),
    )
    expected_server = (expected_client[1], expected_client[0], expected_client[3], expected_client[2])

    async def main():
        with negotiation(monkeypatch, client=options):
            async with serving() as server, connect(server.url) as ws:
                assert agreed(ws.extension) == expected_client
                assert agreed(next(iter(server.connections)).extension) == expected_server
                for size in SIZES:
                    for message in (text_payload(size, size).decode(), binary_payload(size, size)):
                        for _ in range(2):
                            await ws.send(message)
                            assert await ws.recv() == message

    run(main(), bound=6 * BOUND)


def test_in_process_server_demands(monkeypatch):
    """The server's own demands reach the client: no context takeover and a smaller client window."""

    async def main():
        with negotiation(monkeypatch, server={"server_no_context_takeover": True, "client_no_context_takeover": True,
                                              "client_max_window_bits": 10}):
            async with serving() as server, connect(server.url) as ws:
                assert ws.response_headers["Sec-WebSocket-Extensions"] == (
                    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10")
                assert agreed(ws.extension) == (True, True, 10, 15)
                for message in (text_payload(5000).decode(), text_payload(5000).decode()):
                    await ws.send(message)
                    assert await ws.recv() == message

    run(main(), bound=6 * BOUND)


def test_in_process_zip_bomb():
    """Our client sends 10 MB of zeros (~10 KB compressed) to a 1 MiB server: 1009 both ways, other clients fine."""
    seen = []

    async def handler(ws):
        try:
            await echo(ws)
        except ConnectionClosedError as exc:
            seen.append(exc)
            raise

    async def main():
        async with serving(handler, max_size=MiB) as server, connect(server.url) as bystander:
            async with connect(server.url, max_size=None) as ws:
                await ws.send(bytes(10_000_000))
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
                assert info.value.rcvd.code == 1009
            await bystander.send(bytes(MiB))
            assert await bystander.recv() == bytes(MiB)
        (exc,) = seen
        assert exc.sent.code == 1009 and "max_size" in exc.sent.reason

    run(main(), bound=6 * BOUND)


def test_wire_view_shows_compression(monkeypatch, caplog):
    """-v: sent and received compressed frames show their size before and after."""
    caplog.set_level(logging.DEBUG, logger="common")

    async def main():
        async with serving() as server, connect(server.url) as ws:
            await ws.send("spam " * 100)
            assert await ws.recv() == "spam " * 100
            await ws.send("tiny")
            assert await ws.recv() == "tiny"

    run(main(), bound=6 * BOUND)
    # Each line starts with the connection's name (the peer's address), then the frame.
    lines = [r.getMessage().split(" ", 1)[1] for r in caplog.records if r.levelno == logging.DEBUG]
    sent = [line for line in lines if line.startswith("> TEXT 'spam") and "[500 bytes, compressed to" in line]
    received = [line for line in lines if line.startswith("< TEXT 'spam") and "[500 bytes, compressed to" in line]
    assert len(sent) == 2 and len(received) == 2, lines  # client and server each
    assert any(line.startswith("< TEXT 'tiny' [4 bytes]") for line in lines), lines


def test_broadcast_compresses_once_per_group(monkeypatch):
    """broadcast(): one compression per window size for connections without context takeover,
    one per connection with it, none below the threshold; everyone gets the right bytes."""
    calls = []
    original = PerMessageDeflate.encode

    def spy(self, payload):
        calls.append(self.shared_key)
        return original(self, payload)

    clients = [
        {"server_no_context_takeover": True},
        {"server_no_context_takeover": True},
        {"server_no_context_takeover": True},
        {"server_no_context_takeover": True, "server_max_window_bits": 9},
        {},
        {},
        None,  # no compression
    ]

    async def main():
        async with serving(lambda ws: ws.wait_closed()) as server:
            sockets = []
            for options in clients:
                with negotiation(monkeypatch, client=options or {}):
                    sockets.append(await connect(server.url, compression=None if options is None else "deflate"))
            async with asyncio.timeout(BOUND):
                while len(server.connections) < len(clients):
                    await asyncio.sleep(0.01)
            monkeypatch.setattr(PerMessageDeflate, "encode", spy)
            for message in (text_payload(1000).decode(), text_payload(1000).decode(), "short", binary_payload(5000)):
                calls.clear()
                broadcast(server.connections, message)
                for ws in sockets:
                    assert await ws.recv() == message
                if len(message) < threshold():
                    assert calls == []
                else:
                    assert sorted(calls, key=str) == sorted([12, 9, None, None], key=str)
            for ws in sockets:
                await ws.close()

    run(main(), bound=6 * BOUND)

"""RFC 6455 conformance of common's client, ``connect()``, against a scripted raw server.

The mirror image of tests/test_conformance.py, in the spirit of the Autobahn
testsuite's *fuzzingserver*: a fake WebSocket server (tests/fake_server.py: asyncio
streams on 127.0.0.1, port 0; nothing of common's server) completes the opening
handshake by computing Sec-WebSocket-Accept itself, then writes the frames each
case scripts, byte by byte, unmasked as a server must. It drives a small echo
client built on ``common.connect()`` (recv, send back, until closed): exactly
what a fuzzing server drives. Every frame the client sends is checked against
the rules for a client (FakeServer.recv_frame): masked with a 4-byte key
(5.1, 5.3), minimal length encoding (5.2), no RSV bit without an extension
(5.2), known opcodes (5.2), control frames final and at most 125 bytes (5.5).

Categories as in Autobahn: 1 framing, 2 ping/pong, 3 reserved bits, 4 opcodes,
5 fragmentation, 6 UTF-8, 7 close, 8 a masked server frame, 9 limits, 10 the
server's opening handshake answer (permessage-deflate included), plus the
client's opening request itself (4.1).

Where the client must fail the connection, the valid message written just
before the bad frame, in the same TCP write, is echoed first ("strict" order).
After its Close, the client must wait for the server to close TCP (7.1.1) and
send nothing more (5.5.1): FakeServer.expect_close and finish() check both.

The fake server and the client share one event loop per case. Every wait is
bounded (TIMEOUT, 5 s); nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import common.client
from common import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHeader,
    InvalidMessage,
    InvalidStatus,
    InvalidUpgrade,
    NegotiationError,
    State,
    WebSocketException,
    connect,
)

try:                                    # tests/ as a package or as a plain directory
    from . import rawws
    from .fake_server import ClientResult, Deflater, FakeServer, Request, close_frame, frame
    from .test_conformance import INVALID_CODES, INVALID_UTF8, VALID_CODES, VALID_TEXTS, payload_for
except ImportError:
    import rawws
    from fake_server import ClientResult, Deflater, FakeServer, Request, close_frame, frame
    from test_conformance import INVALID_CODES, INVALID_UTF8, VALID_CODES, VALID_TEXTS, payload_for

CONT, TEXT, BINARY, CLOSE, PING, PONG = rawws.CONT, rawws.TEXT, rawws.BINARY, rawws.CLOSE, rawws.PING, rawws.PONG
RSV1, RSV2, RSV3 = rawws.RSV1, rawws.RSV2, rawws.RSV3
close_payload = rawws.close_payload

TIMEOUT = rawws.TIMEOUT                 # 5 s: the bound of every single wait
CASE_TIMEOUT = 3 * TIMEOUT              # the bound of a whole case
KiB, MiB = 1 << 10, 1 << 20
LIMIT = 1000                            # max_size of the "limited" client

DATA = [TEXT, BINARY]
DATA_IDS = ["text", "binary"]

# The client under test: no keepalive pings (they would interleave with the
# script), and every wait of its own bounded like ours. It offers
# permessage-deflate (the default); the fake server declines unless a case is
# about it, so the client must then never set RSV1.
CLIENT_OPTIONS: dict[str, Any] = dict(ping_interval=None, close_timeout=TIMEOUT, open_timeout=TIMEOUT)


def fragments(opcode: int, payload: bytes, size: int) -> bytes:
    """A whole message cut into unmasked frames of `size` payload bytes (5.4)."""
    chunks = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
    return b"".join(frame(opcode if i == 0 else CONT, chunk, fin=i == len(chunks) - 1)
                    for i, chunk in enumerate(chunks))


def as_message(opcode: int, payload: bytes) -> str | bytes:
    """What recv() must return: str for text, bytes for binary (5.6)."""
    return payload.decode() if opcode == TEXT else payload


# ===================================================================== running a case

Script = Callable[[FakeServer], Awaitable[None]]
Client = Callable[..., Awaitable[None]]


async def echo_client(uri: str, result: ClientResult, **options: Any) -> None:
    """What a fuzzing server drives: connect, then recv and send back until closed."""
    try:
        ws = await connect(uri, **{**CLIENT_OPTIONS, **options})
    except (WebSocketException, OSError) as exc:        # TimeoutError is an OSError
        result.error = exc
        return
    result.ws = ws
    try:
        while True:
            message = await ws.recv()
            result.received.append(message)
            await ws.send(message)
    except ConnectionClosed as exc:
        result.closed = exc
    await ws.wait_closed()


def run_case(script: Script, client: Client = echo_client, *, path: str = "/", **options: Any) -> ClientResult:
    """Serve each connection with `script` while `client` runs against the fake server.

    A failing script aborts its connection at once (so the client does not wait)
    and its assertion is raised first: it names what the client did wrong.
    """
    result = ClientResult()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        served: list[asyncio.Future[None]] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            done: asyncio.Future[None] = loop.create_future()
            served.append(done)
            try:
                await script(FakeServer(reader, writer, result))
            except Exception as exc:
                writer.transport.abort()
                done.set_exception(exc)
            else:
                writer.transport.close()
                done.set_result(None)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        task = asyncio.create_task(client(f"ws://127.0.0.1:{port}{path}", result, **options))
        try:
            async with asyncio.timeout(CASE_TIMEOUT):
                await asyncio.wait([task])
                if served:
                    await asyncio.wait(served)
        except TimeoutError:
            raise AssertionError(f"the case did not finish within {CASE_TIMEOUT} s") from None
        finally:
            server.close()
        for done in served:
            if done.exception() is not None:
                raise done.exception()  # type: ignore[misc]
        task.result()

    asyncio.run(main())
    return result


VALID = "valid message before the bad frame"


def run_fail(bad: bytes, code: int, *, reply: bool = True, **options: Any) -> ClientResult:
    """Write a valid text message and `bad` in ONE write: the client echoes the message,
    then fails the connection with a Close `code` (7.1.7), and waits for the server to
    close TCP. reply: answer with a Close first (not when `bad` was itself a Close or
    is an unfinished frame); the failing client must ignore it (7.1.7)."""

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(frame(TEXT, VALID.encode()) + bad)
        await peer.expect_message(TEXT, VALID.encode())
        await peer.expect_close(code)
        await peer.finish(close_frame(code) if reply else None)

    result = run_case(script, **options)
    assert_failed(result, code, [VALID])
    return result


def assert_failed(result: ClientResult, code: int, received: list[str | bytes]) -> None:
    """The application saw the messages before the error, then ConnectionClosedError
    saying which code it sent; no close frame counts as received (7.1.7, 7.1.5: 1006)."""
    assert result.error is None, result.error
    assert result.received == received, result.received
    assert isinstance(result.closed, ConnectionClosedError), repr(result.closed)
    assert result.closed.sent is not None and result.closed.sent.code == code, str(result.closed)
    assert result.ws is not None and result.ws.close_code == 1006, result.ws and result.ws.close_code


async def handshake_then(peer: FakeServer, data: bytes) -> None:
    await peer.handshake()
    await peer.send(data)


# ===================================================================== 1. framing

LENGTHS = [0, 125, 126, 65535, 65536, MiB]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("opcode", DATA, ids=DATA_IDS)
def test_1_echo_lengths(opcode, length):
    """5.2 payload length (7-bit, 16-bit and 64-bit forms, minimal both ways) and 5.3
    masking: the client receives an unmasked frame of 0 to 1 MiB (its default max_size,
    inclusive) and echoes it masked with a 4-byte key; the header is byte-exact and the
    payload is right once unmasked. recv() returns str for text, bytes for binary (5.6)."""
    payload = payload_for(opcode, length)

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(frame(opcode, payload))
        [echo] = await peer.expect_message(opcode, payload)
        header, _ = rawws.build_header(opcode, length, mask=True, mask_key=echo.key)
        assert echo.header == header, f"client header {echo.header.hex(' ')}, expected {header.hex(' ')}"
        await peer.close_normally()

    result = run_case(script)
    assert result.received == [as_message(opcode, payload)]
    assert isinstance(result.closed, ConnectionClosedOK) and result.ws.close_code == 1000


@pytest.mark.parametrize("sizes", [1, 7, [1, 1, 3]], ids=["1-byte-writes", "7-byte-writes", "header-split"])
@pytest.mark.parametrize("opcode", DATA, ids=DATA_IDS)
def test_1_frame_in_many_tcp_writes(opcode, sizes):
    """5.2: framing does not depend on TCP segmentation: a 300-byte frame (16-bit length)
    written in 1-byte writes, 7-byte writes, or with its header cut, is echoed."""
    payload = payload_for(opcode, 300)

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send_split(frame(opcode, payload), sizes)
        await peer.expect_message(opcode, payload)
        await peer.close_normally()

    assert run_case(script).received == [as_message(opcode, payload)]


def test_1_masking_keys_differ():
    """5.3: "The masking key MUST be derived from a strong source of entropy, and the
    masking key for a given frame MUST NOT make it simple for a server or proxy to
    predict the masking key for a subsequent frame": 64 echoed frames, 64 keys,
    all different (a repeat among random 32-bit keys has odds of 1 in 2 million)."""
    messages = [(TEXT if i % 2 else BINARY, b"same payload") for i in range(64)]

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(b"".join(frame(op, p) for op, p in messages))
        for op, p in messages:
            await peer.expect_message(op, p)
        assert len(set(peer.keys)) == len(peer.keys) == 64, f"{len(set(peer.keys))} distinct keys of 64"
        await peer.close_normally()

    assert len(run_case(script).received) == 64


def test_1_pipelined_messages_in_order():
    """5.4/6.2: 100 messages written at once are delivered, and echoed, one by one in order."""
    messages = [(TEXT if i % 2 else BINARY, f"message {i}".encode() * (i % 7)) for i in range(100)]

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(b"".join(frame(op, p) for op, p in messages))
        for op, p in messages:
            await peer.expect_message(op, p)
        await peer.close_normally()

    assert run_case(script).received == [as_message(op, p) for op, p in messages]


# ===================================================================== 2. ping / pong

@pytest.mark.parametrize("length", [0, 125])
def test_2_ping_gets_pong(length):
    """5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in response";
    5.5.3: with identical "Application data". The pong is masked (5.3), header byte-exact."""
    payload = bytes(range(256))[-length:] if length else b""

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(frame(PING, payload))
        pong = await peer.recv_frame()
        assert (pong.opcode, pong.fin, pong.payload) == (PONG, True, payload), pong
        assert pong.header == rawws.build_header(PONG, length, mask=True, mask_key=pong.key)[0]
        await peer.close_normally()

    assert run_case(script).received == []


def test_2_ten_pings_ten_pongs():
    """5.5.2/5.5.3: ten pings written at once get ten pongs with the same payloads, in order.
    (5.5.3 would let an endpoint answer only the most recent one; this client answers all.)"""
    payloads = [f"ping {i}".encode() for i in range(10)]

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(b"".join(frame(PING, p) for p in payloads))
        for p in payloads:
            pong = await peer.recv_frame()
            assert (pong.opcode, pong.payload) == (PONG, p), pong
        await peer.close_normally()

    run_case(script)


@pytest.mark.parametrize("opcode", DATA, ids=DATA_IDS)
def test_2_ping_during_fragmented_message(opcode):
    """5.4: "Control frames MAY be injected in the middle of a fragmented message";
    5.5.2: the Pong goes out while the message is still incomplete (the script waits for
    it before sending the rest); then the reassembled message is echoed."""

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(frame(opcode, b"first,", fin=False) + frame(PING, b"mid 1"))
        pong = await peer.recv_frame()
        assert (pong.opcode, pong.payload) == (PONG, b"mid 1"), pong
        await peer.send(frame(CONT, b"second,", fin=False) + frame(PING, b"mid 2") + frame(CONT, b"third"))
        pong = await peer.recv_frame()
        assert (pong.opcode, pong.payload) == (PONG, b"mid 2"), pong
        await peer.expect_message(opcode, b"first,second,third")
        await peer.close_normally()

    assert run_case(script).received == [as_message(opcode, b"first,second,third")]


@pytest.mark.parametrize("length", [0, 125])
def test_2_unsolicited_pong_ignored(length):
    """5.5.3: "A Pong frame MAY be sent unsolicited ... A response to an unsolicited Pong
    frame is not expected": the next thing the client sends is the echo of the text after it."""

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(frame(PONG, b"p" * length) + frame(TEXT, b"after pong"))
        f = await peer.recv_frame()
        assert (f.opcode, f.payload) == (TEXT, b"after pong"), f
        await peer.close_normally()

    assert run_case(script).received == ["after pong"]


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE], ids=["ping", "pong", "close"])
def test_2_control_frame_126_bytes(opcode):
    """5.5: "All control frames MUST have a payload length of 125 bytes or less" -> the
    client fails the connection with 1002 (7.4.1), after echoing the message before."""
    payload = close_payload(1000, "x" * 124) if opcode == CLOSE else b"x" * 126
    assert len(payload) == 126
    run_fail(frame(opcode, payload), 1002, reply=opcode != CLOSE)


# ===================================================================== 3. reserved bits

RSV_FRAMES = {"text": (TEXT, b"rsv text"), "binary": (BINARY, b"rsv binary"), "ping": (PING, b"rsv ping"),
              "pong": (PONG, b"rsv pong"), "close": (CLOSE, close_payload(1000))}


@pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3], ids=["rsv1", "rsv2", "rsv3", "rsv123"])
@pytest.mark.parametrize("kind", list(RSV_FRAMES))
def test_3_reserved_bits(kind, rsv):
    """5.2: RSV1-3 "MUST be 0 unless an extension is negotiated that defines meanings for
    non-zero values. If a nonzero value is received and none of the negotiated extensions
    defines the meaning of such a nonzero value, the receiving endpoint MUST _Fail the
    WebSocket Connection_" -> 1002. The client offered permessage-deflate, the server
    declined: RSV1 means nothing either. Strict order: the valid text first."""
    opcode, payload = RSV_FRAMES[kind]
    run_fail(frame(opcode, payload, rsv=rsv), 1002, reply=opcode != CLOSE)


def test_3_reserved_bit_on_continuation():
    """5.2: an RSV bit on a continuation frame of a fragmented message -> 1002."""
    run_fail(frame(TEXT, b"frag", fin=False) + frame(CONT, b"ment", rsv=RSV1), 1002)


# ===================================================================== 4. opcodes

@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF], ids=lambda o: f"0x{o:X}")
@pytest.mark.parametrize("length", [0, 10])
def test_4_reserved_opcode(opcode, length):
    """5.2: opcodes 0x3-0x7 (non-control) and 0xB-0xF (control) are reserved; "If an unknown
    opcode is received, the receiving endpoint MUST _Fail the WebSocket Connection_" -> 1002,
    after echoing the valid text written just before."""
    run_fail(frame(opcode, b"r" * length), 1002)


# ===================================================================== 5. fragmentation

@pytest.mark.parametrize("count", [2, 3, 100])
@pytest.mark.parametrize("opcode", DATA, ids=DATA_IDS)
def test_5_fragmented_message(opcode, count):
    """5.4: a message in `count` fragments (opcode + FIN=0, CONT frames, the last FIN=1)
    is delivered as one message and echoed (the client's echo may be fragmented or not)."""
    payload = payload_for(opcode, count)

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(fragments(opcode, payload, 1))
        await peer.expect_message(opcode, payload)
        await peer.close_normally()

    assert run_case(script).received == [as_message(opcode, payload)]


@pytest.mark.parametrize("shape", ["empty-first", "empty-middle", "empty-last", "all-empty"])
def test_5_empty_fragments(shape):
    """5.4/5.2: zero-length fragments are legal anywhere in a fragmented message."""
    parts = {"empty-first": [b"", b"abc", b"def"], "empty-middle": [b"abc", b"", b"def"],
             "empty-last": [b"abc", b"def", b""], "all-empty": [b"", b"", b""]}[shape]
    data = b"".join(frame(TEXT if i == 0 else CONT, p, fin=i == len(parts) - 1) for i, p in enumerate(parts))

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(data)
        await peer.expect_message(TEXT, b"".join(parts))
        await peer.close_normally()

    assert run_case(script).received == [b"".join(parts).decode()]


@pytest.mark.parametrize("opcode", DATA, ids=DATA_IDS)
def test_5_control_frames_between_fragments(opcode):
    """5.4: control frames in the middle of a fragmented message: a Ping is answered, an
    unsolicited Pong ignored, and the message, written with them in one write, is whole."""
    data = (frame(opcode, b"one,", fin=False) + frame(PING, b"between") + frame(CONT, b"two,", fin=False)
            + frame(PONG, b"unsolicited") + frame(CONT, b"three"))

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(data)
        pong = await peer.recv_frame()
        assert (pong.opcode, pong.payload) == (PONG, b"between"), pong
        await peer.expect_message(opcode, b"one,two,three")
        await peer.close_normally()

    assert run_case(script).received == [as_message(opcode, b"one,two,three")]


def test_5_close_between_fragments():
    """5.4/5.5.1: a Close in the middle of a fragmented message acts at once: the client
    echoes it and the unfinished message is never delivered."""

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(frame(TEXT, b"never", fin=False) + close_frame(1000))
        await peer.expect_close(1000)
        await peer.finish()

    result = run_case(script)
    assert result.received == [] and result.ws.close_code == 1000


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE], ids=["ping", "pong", "close"])
@pytest.mark.parametrize("follow", [False, True], ids=["alone", "with-cont"])
def test_5_fragmented_control_frame(opcode, follow):
    """5.5: "Control frames themselves MUST NOT be fragmented" (FIN=0) -> 1002."""
    payload = close_payload(1000) if opcode == CLOSE else b"frag"
    bad = frame(opcode, payload, fin=False) + (frame(CONT, b"ment") if follow else b"")
    run_fail(bad, 1002, reply=opcode != CLOSE)


@pytest.mark.parametrize("fin", [True, False], ids=["fin", "nofin"])
def test_5_continuation_without_message(fin):
    """5.4: a continuation frame with no fragmented message to continue -> 1002."""
    run_fail(frame(CONT, b"orphan", fin=fin), 1002)


@pytest.mark.parametrize("intruder", DATA, ids=DATA_IDS)
def test_5_new_message_inside_fragmented(intruder):
    """5.4: "the fragments of one message MUST NOT be interleaved between the fragments of
    another message": a TEXT or BINARY frame inside a fragmented message -> 1002."""
    run_fail(frame(TEXT, b"start", fin=False) + frame(intruder, b"intruder"), 1002)


# ===================================================================== 6. UTF-8

@pytest.mark.parametrize("name", list(VALID_TEXTS))
def test_6_valid_utf8_echoed(name):
    """5.6/8.1: text messages are UTF-8; valid texts (1- to 4-byte sequences, U+FFFF,
    U+10FFFF, NUL) are delivered as str and echoed byte-exact."""
    data = VALID_TEXTS[name].encode("utf-8")

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(frame(TEXT, data))
        await peer.expect_message(TEXT, data)
        await peer.close_normally()

    assert run_case(script).received == [VALID_TEXTS[name]]


@pytest.mark.parametrize("name", ["kosme", "four-byte", "mixed"])
def test_6_valid_utf8_split_everywhere(name):
    """8.1/5.4: UTF-8 is checked over the whole message, not per frame: a valid text cut
    into 2 fragments at every byte position (inside multibyte sequences too) is echoed."""
    data = VALID_TEXTS[name].encode("utf-8")

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        for cut in range(len(data) + 1):
            await peer.send(frame(TEXT, data[:cut], fin=False) + frame(CONT, data[cut:]))
            await peer.expect_message(TEXT, data)
        await peer.close_normally()

    assert run_case(script).received == [VALID_TEXTS[name]] * (len(data) + 1)


@pytest.mark.parametrize("mode", ["one-frame", "1-byte-fragments"])
@pytest.mark.parametrize("name", list(INVALID_UTF8))
def test_6_invalid_utf8(name, mode):
    """8.1: "When an endpoint is to interpret a byte stream as UTF-8 but finds that the byte
    stream is not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail the WebSocket
    Connection_" -> 1007 (7.4.1): overlongs, surrogates, code points above U+10FFFF, F5-FF,
    lone continuation bytes, sequences truncated at the end; in one frame and in 1-byte
    fragments; after echoing the valid text written just before."""
    data = b"ab" + INVALID_UTF8[name] + (b"" if "at-end" in name else b"yz")
    run_fail(frame(TEXT, data) if mode == "one-frame" else fragments(TEXT, data, 1), 1007)


@pytest.mark.parametrize("first,second", [
    ("\u03ba\u1f79\u03c3\u03bc\u03b5".encode(), b"\xed\xa0\x80edited"),
    (b"hello", b"\xf4\x90\x80\x80world"),
    (b"hello \xf4", b"\x90\x80\x80"),                   # the invalid sequence straddles the fragments
    (b"hello", b"\xc0\xaf"),
], ids=["kosme-surrogate", "above-10ffff", "straddling", "overlong"])
def test_6_fail_fast_between_fragments(first, second):
    """8.1, fail fast: the first fragment is valid, the second holds an invalid sequence and
    the final fragment is NEVER sent: the client closes with 1007 without waiting for the
    end of the message (8.1 does not say when; Autobahn 6.4.x "strict" asks for this)."""

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(frame(TEXT, first, fin=False))
        await peer.send(frame(CONT, second, fin=False))
        await peer.expect_close(1007)
        await peer.finish(close_frame(1007))

    assert_failed(run_case(script), 1007, [])


@pytest.mark.parametrize("prefix", [b"abc\xed\xa0\x80defg", b"abc\xc0\xafdefgh", b"abcd\xf4\x90\x80\x80ef",
                                    b"\x80abcdefghi", b"abcdefg\xff\xfe\xfd"],
                         ids=["surrogate", "overlong", "above-10ffff", "continuation", "ff"])
@pytest.mark.parametrize("where", ["single-frame", "continuation-frame"])
def test_6_fail_fast_inside_one_frame(prefix, where):
    """8.1, fail fast within ONE frame written in several TCP writes: the header announces
    100 payload bytes; the header, then the first 10 (with an invalid sequence) are written
    and the rest is held back: the client closes with 1007 before the rest arrives. (No
    Close reply from the server: it is in the middle of a frame.)"""
    assert len(prefix) == 10
    opcode = CONT if where == "continuation-frame" else TEXT
    data = frame(opcode, prefix + b"x" * 90)

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        if opcode == CONT:
            await peer.send(frame(TEXT, b"ok so far", fin=False))
        await peer.send_split(data[:2 + 10], [2, 5])        # header; 5 bytes; 5 bytes
        await peer.expect_close(1007)
        await peer.finish()

    assert_failed(run_case(script), 1007, [])


# ===================================================================== 7. close

@pytest.mark.parametrize("code", VALID_CODES)
def test_7_close_valid_code_echoed(code):
    """5.5.1: "If an endpoint receives a Close frame and did not previously send a Close
    frame, the endpoint MUST send a Close frame in response" (it "typically echos the status
    code it received"; this client does); 7.1.1: then the client waits for the server to
    close TCP and sends nothing more; 7.1.5: ws.close_code is the code received.
    1012-1014 are IANA-registered after RFC 6455 and count as valid."""

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(close_frame(code, "bye"))
        await peer.expect_close(code)
        await peer.finish()

    result = run_case(script)
    assert result.ws.close_code == code and result.ws.close_reason == "bye"
    assert isinstance(result.closed, ConnectionClosedOK if code in (1000, 1001) else ConnectionClosedError)
    assert result.closed.rcvd.code == code and result.closed.rcvd_then_sent is True


@pytest.mark.parametrize("code", INVALID_CODES)
def test_7_close_invalid_code(code):
    """7.4.1/7.4.2: 0-999 are not used, 1004 is reserved, 1005/1006/1015 "MUST NOT be set as
    a status code in a Close control frame", 1016-2999 are for future RFCs, 5000+ undefined
    -> the client fails the connection with 1002, after echoing the valid text before."""
    run_fail(close_frame(code), 1002, reply=False)


def test_7_close_one_byte_payload():
    """5.5.1: a close body starts with a 2-byte status code; a 1-byte body -> 1002."""
    run_fail(frame(CLOSE, b"\x03"), 1002, reply=False)


@pytest.mark.parametrize("reason", [b"\xed\xa0\x80", b"ok \xc0\xaf", b"\xce"], ids=["surrogate", "overlong", "truncated"])
def test_7_close_reason_invalid_utf8(reason):
    """5.5.1: the close reason is UTF-8; 8.1: invalid UTF-8 -> 1007."""
    run_fail(frame(CLOSE, close_payload(1000) + reason), 1007, reply=False)


def test_7_close_empty():
    """5.5.1/7.1.5: a Close without a body is answered with a Close without a code or with
    1000 (1005 MUST NOT be sent, 7.4.1); the client sees close_code 1005 ("no status")."""

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(frame(CLOSE, b""))
        await peer.expect_close(None, 1000)
        await peer.finish()

    result = run_case(script)
    assert result.ws.close_code == 1005 and isinstance(result.closed, ConnectionClosedOK)


@pytest.mark.parametrize("reason", ["r" * 123, "\u03ba\u1f79\u03c3\u03bc\u03b5" + "x" * 112], ids=["123-ascii", "123-utf8"])
def test_7_close_max_reason(reason):
    """5.5 + 5.5.1: code + 123-byte reason = 125 bytes, the largest close frame; the client
    answers with the code (its answer stays within 125 bytes) and reports the reason."""
    assert len(reason.encode()) == 123

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(close_frame(1000, reason))
        await peer.expect_close(1000)
        await peer.finish()

    result = run_case(script)
    assert (result.ws.close_code, result.ws.close_reason) == (1000, reason)


@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING], ids=["text", "binary", "ping"])
def test_7_frames_after_close_ignored(opcode):
    """5.5.1: after a Close the peer sends no more data; the client answers the Close and
    neither delivers, echoes nor pongs a frame that follows it in the same write."""

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(close_frame(1000) + frame(opcode, b"after close"))
        await peer.expect_close(1000)
        await peer.finish()

    result = run_case(script)
    assert result.received == [] and result.ws.close_code == 1000


@pytest.mark.parametrize("then,code", [(close_frame(1001, "going"), 1001), (frame(0x3), 1002)],
                         ids=["close-1001", "bad-opcode"])
def test_7_server_half_closes_right_after_its_frame(then, code):
    """5.5.1: "If an endpoint receives a Close frame and did not previously send a Close
    frame, the endpoint MUST send a Close frame in response"; 7.1.7: a failing endpoint
    SHOULD send its Close. Here a server going away answers 101, sends a Close 1001 (or a
    reserved opcode) in the same write and half-closes TCP at once (it still reads): the
    Close the client queued in answer must still go out although the server's FIN is
    read in the same turn (before 2e972fd, Connection._connection_lost dropped it)."""

    async def script(peer: FakeServer) -> None:
        await peer.handshake(then=then)
        peer.writer.write_eof()
        f = await peer.recv_frame()
        assert (f.opcode, f.close_code) == (CLOSE, code), f
        await peer.expect_eof("after its Close frame (5.5.1)")

    result = run_case(script)
    assert result.ws.close_code == (1001 if code == 1001 else 1006)
    assert result.closed is not None and result.closed.sent.code == code


def test_7_tcp_closed_without_close_frame():
    """7.1.5: "If _The WebSocket Connection is Closed_ and no Close control frame was
    received by the endpoint ... _The WebSocket Connection Close Code_ is considered to be
    1006": the server closes TCP without a Close; recv() raises ConnectionClosedError."""

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(frame(TEXT, b"last"))
        await peer.expect_message(TEXT, b"last")
        peer.writer.write_eof()
        await peer.expect_eof("after the server closed TCP without a Close")

    result = run_case(script)
    assert result.received == ["last"] and result.ws.close_code == 1006
    assert isinstance(result.closed, ConnectionClosedError) and result.closed.rcvd is None


async def closing_client(uri: str, result: ClientResult, **options: Any) -> None:
    """Send one message, then ws.close(1000, "done") and record how it went."""
    async with connect(uri, **{**CLIENT_OPTIONS, **options}) as ws:
        result.ws = ws
        await ws.send("bye")
        await ws.close(1000, "done")
        result.extra["state"] = ws.state


def test_7_client_initiated_close():
    """7.1.2/5.5.1: ws.close(1000, "done") sends a masked Close with the code and the UTF-8
    reason (byte-exact), then waits: the server's answering Close and its TCP close end the
    handshake (7.1.1); close() returns with the connection CLOSED and close_code 1000."""

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.expect_message(TEXT, b"bye")
        f = await peer.expect_close(1000)
        assert f.payload == b"\x03\xe8done" and f.header == rawws.build_header(CLOSE, 6, mask_key=f.key)[0]
        await peer.finish(close_frame(1000))

    result = run_case(script, closing_client)
    assert result.extra["state"] is State.CLOSED and result.ws.close_code == 1000


def test_7_client_close_unanswered_is_bounded():
    """7.1.1: the client "MAY close the connection at any time after sending and receiving
    a Close message" - and must not wait forever: a server that never answers the client's
    Close nor closes TCP is cut off after close_timeout (here 0.2 s); close_code is 1006."""

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.expect_message(TEXT, b"bye")
        await peer.expect_close(1000)
        await peer.expect_eof("after its Close frame (5.5.1)")      # the client gives up

    result = run_case(script, closing_client, close_timeout=0.2)
    assert result.extra["state"] is State.CLOSED and result.ws.close_code == 1006


# ===================================================================== 8. masking

@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING, CLOSE], ids=["text", "binary", "ping", "close"])
def test_8_masked_server_frame(opcode):
    """5.1: "A server MUST NOT mask any frames that it sends to the client. A client MUST
    close a connection if it detects a masked frame" (7.1.7: with 1002), after echoing the
    valid text written just before."""
    payload = close_payload(1000) if opcode == CLOSE else b"masked"
    run_fail(frame(opcode, payload, mask=True), 1002, reply=opcode != CLOSE)


# ===================================================================== 9. limits

@pytest.mark.parametrize("length", [LIMIT + 1, 2000, 1 << 40], ids=["1001", "2000", "2^40"])
def test_9_oversized_frame_refused_from_header(length):
    """10.4/7.4.1: with max_size=1000, a frame announcing more is refused with 1009 ("a
    message that is too big for it to process") as soon as its HEADER arrives: the payload
    is never sent, so the client cannot be waiting for it."""
    header, _ = rawws.build_header(BINARY, length, mask=False)
    run_fail(header, 1009, reply=False, max_size=LIMIT)


def test_9_default_limit_from_header():
    """10.4/7.4.1: the default max_size is 1 MiB: a frame announcing 1 MiB + 1 -> 1009
    from the header alone (a 1 MiB message is echoed, see test_1_echo_lengths)."""
    header, _ = rawws.build_header(TEXT, MiB + 1, mask=False)
    run_fail(header, 1009, reply=False)


@pytest.mark.parametrize("parts", [[LIMIT], [400, 600], [1] * 10 + [LIMIT - 10]],
                         ids=["one-frame", "two-fragments", "eleven-fragments"])
def test_9_limit_is_inclusive(parts):
    """10.4: a message of exactly max_size (1000) bytes, in one frame or in fragments, is
    delivered and echoed."""
    payload = payload_for(TEXT, sum(parts))
    data, pos = b"", 0
    for i, n in enumerate(parts):
        data += frame(TEXT if i == 0 else CONT, payload[pos:pos + n], fin=i == len(parts) - 1)
        pos += n

    async def script(peer: FakeServer) -> None:
        await peer.handshake()
        await peer.send(data)
        await peer.expect_message(TEXT, payload)
        await peer.close_normally()

    assert run_case(script, max_size=LIMIT).received == [payload.decode()]


def test_9_fragmented_message_grows_past_limit():
    """10.4/7.4.1: fragments of 400 bytes, never final: when the total passes max_size=1000
    (third fragment) the client closes with 1009 without waiting for the end."""
    data = frame(TEXT, b"x" * 400, fin=False) + frame(CONT, b"x" * 400, fin=False) + frame(CONT, b"x" * 400, fin=False)
    run_fail(data, 1009, max_size=LIMIT)


@pytest.mark.parametrize("max_size", [2**20, LIMIT], ids=["default", "limited"])
def test_9_64bit_length_top_bit_set(max_size):
    """5.2: in the 64-bit length form "the most significant bit MUST be 0" -> 1002, a
    framing error rather than a size one, also on a client whose max_size would say 1009."""
    header, _ = rawws.build_header(BINARY, (1 << 63) | 5, mask=False, length_form=64)
    run_fail(header + b"\x00" * 5, 1002, reply=False, max_size=max_size)


# ===================================================================== 10. the server's handshake answer

_ACCEPT = object()      # "the right Sec-WebSocket-Accept"


def answer(key: str, *, status: str = "101 Switching Protocols", upgrade: str | None = "websocket",
           connection: str | None = "Upgrade", accept: Any = _ACCEPT, extra: tuple = (),
           body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    """A server's answer to the opening request, right by default (4.2.2), wrong as asked."""
    lines = [f"{version} {status}"]
    if upgrade is not None:
        lines.append(f"Upgrade: {upgrade}")
    if connection is not None:
        lines.append(f"Connection: {connection}")
    if accept is _ACCEPT:
        accept = rawws.accept_for(key)
    if accept is not None:
        lines.append(f"Sec-WebSocket-Accept: {accept}")
    lines += [f"{name}: {value}" for name, value in extra]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def sha1_b64(text: str) -> str:
    return base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()


# (id, connect options, answer options, exception, text the message must contain)
BAD_ANSWERS = [
    ("wrong-accept", {}, dict(accept=rawws.accept_for("AAAAAAAAAAAAAAAAAAAAAA==")), InvalidHeader,
     "wrong Sec-WebSocket-Accept"),
    ("accept-without-guid", {}, dict(accept=lambda key: sha1_b64(key)), InvalidHeader, "wrong Sec-WebSocket-Accept"),
    ("accept-is-the-key", {}, dict(accept=lambda key: key), InvalidHeader, "wrong Sec-WebSocket-Accept"),
    ("no-accept", {}, dict(accept=None), InvalidHeader, "missing Sec-WebSocket-Accept"),
    ("two-accepts", {}, dict(extra=lambda key: [("Sec-WebSocket-Accept", rawws.accept_for(key))]), InvalidHeader,
     "more than one Sec-WebSocket-Accept"),
    ("no-upgrade", {}, dict(upgrade=None), InvalidUpgrade, "Upgrade: websocket"),
    ("upgrade-h2c", {}, dict(upgrade="h2c"), InvalidUpgrade, "Upgrade: websocket"),
    ("no-connection", {}, dict(connection=None), InvalidUpgrade, "Connection: Upgrade"),
    ("connection-keep-alive", {}, dict(connection="keep-alive"), InvalidUpgrade, "Connection: Upgrade"),
    ("status-200", {}, dict(status="200 OK", body=b"<p>hello</p>"), InvalidStatus, "HTTP 200: <p>hello</p>"),
    ("status-200-with-ws-headers", {}, dict(status="200 OK"), InvalidStatus, "HTTP 200"),
    ("status-302", {}, dict(status="302 Found", extra=[("Location", "ws://elsewhere/")]), InvalidStatus, "HTTP 302"),
    ("status-403", {}, dict(status="403 Forbidden", upgrade=None, connection=None, accept=None,
                            body=b"origin not allowed\n"), InvalidStatus, "HTTP 403: origin not allowed"),
    ("status-426", {}, dict(status="426 Upgrade Required", extra=[("Sec-WebSocket-Version", "13")]),
     InvalidStatus, "HTTP 426"),
    ("extension-not-offered", {"compression": None}, dict(extra=[("Sec-WebSocket-Extensions", "permessage-deflate")]),
     NegotiationError, "did not offer"),
    ("unknown-extension", {}, dict(extra=[("Sec-WebSocket-Extensions", "x-webkit-deflate-frame")]),
     NegotiationError, "did not offer"),
    ("deflate-unknown-param", {}, dict(extra=[("Sec-WebSocket-Extensions", "permessage-deflate; foo=1")]),
     NegotiationError, "foo"),
    ("deflate-twice", {}, dict(extra=[("Sec-WebSocket-Extensions", "permessage-deflate, permessage-deflate")]),
     NegotiationError, "more than once"),
    ("deflate-client-bits-16", {}, dict(extra=[("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits=16")]),
     NegotiationError, "client_max_window_bits"),
    ("deflate-server-bits-7", {}, dict(extra=[("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=7")]),
     NegotiationError, "server_max_window_bits"),
    ("subprotocol-none-offered", {}, dict(extra=[("Sec-WebSocket-Protocol", "chat")]), NegotiationError,
     "subprotocol we did not offer"),
    ("subprotocol-other", {"subprotocols": ["chat"]}, dict(extra=[("Sec-WebSocket-Protocol", "superchat")]),
     NegotiationError, "subprotocol we did not offer"),
    ("subprotocol-two", {"subprotocols": ["chat", "superchat"]},
     dict(extra=[("Sec-WebSocket-Protocol", "chat, superchat")]), NegotiationError, "subprotocol"),
]


def resolve(options: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value(key) if callable(value) else value for name, value in options.items()}


@pytest.mark.parametrize("connect_options,answer_options,error,text", [b[1:] for b in BAD_ANSWERS],
                         ids=[b[0] for b in BAD_ANSWERS])
def test_10_bad_answer_refused(connect_options, answer_options, error, text):
    """4.1: "If the status code received from the server is not 101, the client handles the
    response per HTTP"; if the Upgrade or Connection header is missing or wrong, the
    Sec-WebSocket-Accept is not base64(SHA-1(key + GUID)), an extension (9.1) or a
    subprotocol was not in the request, "the client MUST _Fail the WebSocket Connection_":
    connect() raises the matching InvalidHandshake subclass with a clear message, closes
    TCP and sends no frame."""

    async def script(peer: FakeServer) -> None:
        request = await peer.read_request()
        key = request.single("Sec-WebSocket-Key")
        await peer.send(answer(key, **resolve(answer_options, key)))
        await peer.expect_eof("after a refused handshake")

    result = run_case(script, **connect_options)
    assert result.ws is None
    assert type(result.error) is error, f"expected {error.__name__}, got {result.error!r}"
    assert text in str(result.error), f"{text!r} not in {str(result.error)!r}"
    if error is InvalidStatus:
        assert result.error.status_code == int(answer_options["status"][:3])


# (id, what the server writes instead of a head, text the message must contain)
MALFORMED_ANSWERS = [
    ("http-1.0", b"HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "malformed status line"),
    ("not-http", b"\x00\x01\x02 garbage\r\n\r\n", "not HTTP"),
    ("bad-header-line", b"HTTP/1.1 101 Switching Protocols\r\nno colon here\r\n\r\n", "malformed header line"),
    ("closed-mid-head", b"HTTP/1.1 101 Switching Protocols\r\nUpgr", "closed in the middle"),
    ("closed-at-once", b"", "connection closed before"),
]


def malformed_script(data: bytes) -> Script:
    async def script(peer: FakeServer) -> None:
        await peer.read_request()
        await peer.send(data)
        peer.writer.write_eof()
        await peer.expect_eof("after a refused handshake")
    return script


@pytest.mark.parametrize("data,text", [m[1:] for m in MALFORMED_ANSWERS], ids=[m[0] for m in MALFORMED_ANSWERS])
def test_10_malformed_answer_refused(data, text):
    """4.1: the answer must be an HTTP/1.1 response ("the HTTP version MUST be at least
    1.1"); anything else, or a connection closed before the answer is complete, fails the
    connection: connect() raises InvalidMessage ("not a well-formed HTTP/1.1 message",
    common/exceptions.py; before 2e972fd a plain InvalidHandshake) saying what was wrong."""
    result = run_case(malformed_script(data))
    assert result.ws is None and type(result.error) is InvalidMessage, repr(result.error)
    assert text in str(result.error) and "server" in str(result.error), str(result.error)


def test_10_open_timeout():
    """4.1: a server that never answers the opening request: connect() gives up after
    open_timeout (here 0.3 s) with TimeoutError and closes TCP."""

    async def script(peer: FakeServer) -> None:
        await peer.read_request()
        await peer.expect_eof("while waiting for the answer")

    result = run_case(script, open_timeout=0.3)
    assert isinstance(result.error, TimeoutError) and result.ws is None


# (id, connect options, answer options, expected ws.subprotocol)
GOOD_ANSWERS = [
    ("plain", {}, {}, None),
    ("case-insensitive", {}, dict(upgrade="WebSocket", connection="upgrade"), None),
    ("connection-token-list", {}, dict(connection="keep-alive, Upgrade"), None),
    ("other-reason-phrase", {}, dict(status="101 Web Socket Protocol Handshake"), None),
    ("no-reason-phrase", {}, dict(status="101"), None),
    ("extra-headers", {}, dict(extra=[("Server", "fake"), ("Date", "Thu, 01 Jan 2026 00:00:00 GMT")]), None),
    ("subprotocol-chosen", {"subprotocols": ["chat", "superchat"]},
     dict(extra=[("Sec-WebSocket-Protocol", "superchat")]), "superchat"),
    ("subprotocol-declined", {"subprotocols": ["chat"]}, {}, None),
]


@pytest.mark.parametrize("connect_options,answer_options,subprotocol", [g[1:] for g in GOOD_ANSWERS],
                         ids=[g[0] for g in GOOD_ANSWERS])
def test_10_good_answer_accepted(connect_options, answer_options, subprotocol):
    """4.1/4.2.2: header names and the websocket/Upgrade tokens are case-insensitive,
    Connection is a token list, the reason phrase is free, other headers are allowed, a
    subprotocol from the offer is taken (ws.subprotocol), and a server may decline one.
    Frames written in the same TCP write as the 101 answer are not lost."""

    async def script(peer: FakeServer) -> None:
        request = await peer.read_request()
        key = request.single("Sec-WebSocket-Key")
        await peer.send(answer(key, **answer_options) + frame(TEXT, b"right after the 101"))
        await peer.expect_message(TEXT, b"right after the 101")
        await peer.close_normally()

    result = run_case(script, **connect_options)
    assert result.error is None and result.received == ["right after the 101"]
    assert result.ws.subprotocol == subprotocol and result.ws.extension is None


DEFLATE_ANSWERS = {
    "plain": {},
    "server-no-context": {"server_no_context_takeover": True},
    "client-no-context": {"client_no_context_takeover": True},
    "server-bits-10": {"server_max_window_bits": 10},
    "client-bits-10": {"client_max_window_bits": 10},
    "client-bits-8": {"client_max_window_bits": 8},
    "all-9": {"server_no_context_takeover": True, "client_no_context_takeover": True,
              "server_max_window_bits": 9, "client_max_window_bits": 9},
}

_rng = random.Random(6455)
# 2,300 bytes whose end repeats its start 2,000 bytes back: a compressor with a window
# over 1 KiB refers back that far, which a 10-bit (or smaller) inflater rejects.
_NOISE = "".join(_rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(2000))
WINDOW_PROBE = (_NOISE + _NOISE[:300]).encode()
BINARY_PROBE = bytes(_rng.getrandbits(8) for _ in range(1500)) * 2


@pytest.mark.parametrize("name", list(DEFLATE_ANSWERS))
def test_10_deflate_accepted(name):
    """RFC 6455 §9.1 and RFC 7692 §7.1/§7.2: the server accepts the permessage-deflate offer
    with these parameters: the client inflates compressed messages (RSV1 on the first frame
    only, a fragmented one too) and uncompressed ones, and compresses its large echoes
    within the window it was allowed, without context takeover if told so; the server
    inflates each with exactly that window (RFC 7692 §7.1.2.2) and context (§7.1.1.2)."""
    params = DEFLATE_ANSWERS[name]
    messages = [(TEXT, b"short"), (TEXT, WINDOW_PROBE), (TEXT, WINDOW_PROBE), (BINARY, BINARY_PROBE)]

    async def script(peer: FakeServer) -> None:
        await peer.handshake(deflate=params)
        for opcode, payload in messages:
            assert peer.deflate is not None
            await peer.send(frame(opcode, peer.deflate(payload), rsv=RSV1))
            frames = await peer.expect_message(opcode, payload)
            if len(payload) > 1000:     # large and repetitive: the client compressed it
                assert frames[0].rsv == RSV1, f"the client did not compress a {len(payload)}-byte message"
        await peer.send(frame(TEXT, b"not compressed " * 20))          # RSV1 is per message
        await peer.expect_message(TEXT, b"not compressed " * 20)
        compressed = peer.deflate(WINDOW_PROBE)
        third = len(compressed) // 3
        await peer.send(frame(TEXT, compressed[:third], fin=False, rsv=RSV1)
                        + frame(CONT, compressed[third:2 * third], fin=False) + frame(CONT, compressed[2 * third:]))
        await peer.expect_message(TEXT, WINDOW_PROBE)
        await peer.close_normally()

    result = run_case(script)
    assert result.error is None and result.ws.extension is not None
    assert len(result.received) == len(messages) + 2


@pytest.mark.parametrize("bad", ["rsv1-ping", "rsv1-continuation", "rsv2-text", "rsv1-close"])
def test_10_deflate_reserved_bits(bad):
    """RFC 7692 §6: permessage-deflate gives RSV1 a meaning on the first frame of a data
    message only; RSV1 on a control frame or a continuation, or RSV2/RSV3 at all, is
    still a protocol error (RFC 6455 5.2) -> 1002."""
    data = {"rsv1-ping": frame(PING, b"p", rsv=RSV1),
            "rsv1-continuation": frame(TEXT, b"frag", fin=False) + frame(CONT, b"ment", rsv=RSV1),
            "rsv2-text": frame(TEXT, b"rsv2", rsv=RSV2),
            "rsv1-close": frame(CLOSE, close_payload(1000), rsv=RSV1)}[bad]

    async def script(peer: FakeServer) -> None:
        await peer.handshake(deflate={})
        await peer.send(frame(TEXT, VALID.encode()) + data)
        await peer.expect_message(TEXT, VALID.encode())
        await peer.expect_close(1002)
        await peer.finish()

    assert_failed(run_case(script), 1002, [VALID])


def test_10_deflate_garbage():
    """RFC 7692 §8.1: "an endpoint ... MUST _Fail the WebSocket Connection_" when the
    compressed data does not inflate; 1002 here (the code is unspecified: 1007 is accepted)."""

    async def script(peer: FakeServer) -> None:
        await peer.handshake(deflate={})
        await peer.send(frame(BINARY, b"\xff\xff\xff\xff not deflate", rsv=RSV1))
        f = await peer.expect_close(1002, 1007)
        await peer.finish()
        peer.client.extra["code"] = f.close_code

    result = run_case(script)
    assert_failed(result, result.extra["code"], [])


def test_10_deflate_bomb_refused():
    """RFC 7692 §8.1 / RFC 6455 10.4: a 1 KiB compressed frame (small enough to pass the
    frame-length check) that inflates to 1 MiB, on a client with max_size=1000: the client
    stops inflating and closes with 1009."""
    bomb = Deflater(15, True)(b"\x00" * MiB)
    assert len(bomb) < 2 * KiB

    async def script(peer: FakeServer) -> None:
        await peer.handshake(deflate={})
        await peer.send(frame(BINARY, bomb, rsv=RSV1))
        await peer.expect_close(1009)
        await peer.finish(close_frame(1009))

    assert_failed(run_case(script, max_size=LIMIT), 1009, [])


# ===================================================================== 4.1 the opening request

# (URI the application gives, expected Host header, request-target, (host, port) dialled)
URIS = [
    ("ws://127.0.0.1:{port}/", "127.0.0.1:{port}", "/", ("127.0.0.1", "{port}")),
    ("ws://localhost/chat?room=1", "localhost", "/chat?room=1", ("localhost", 80)),
    ("ws://example.com:80/", "example.com", "/", ("example.com", 80)),
    ("ws://Example.COM:8080", "example.com:8080", "/", ("example.com", 8080)),
    ("ws://example.com?q=1", "example.com", "/?q=1", ("example.com", 80)),
    ("ws://[::1]:9000/v6", "[::1]:9000", "/v6", ("::1", 9000)),
    ("ws://[::1]/v6", "[::1]", "/v6", ("::1", 80)),
]


def check_request(request: Request, host: str, target: str) -> None:
    """4.1, client requirements 1-9 and the Host rule, one by one."""
    assert request.line == f"GET {target} HTTP/1.1", f"4.1 item 2/RFC 7230: request line {request.line!r}"
    assert request.single("Host").lower() == host.lower(), f"4.1 item 4: Host {request.get_all('Host')}"
    assert "websocket" in request.tokens("Upgrade"), f"4.1 item 5: Upgrade {request.get_all('Upgrade')}"
    assert "upgrade" in request.tokens("Connection"), f"4.1 item 6: Connection {request.get_all('Connection')}"
    key = request.single("Sec-WebSocket-Key")
    try:
        raw = base64.b64decode(key, validate=True)
    except binascii.Error:
        raise AssertionError(f"4.1 item 7: Sec-WebSocket-Key {key!r} is not base64") from None
    assert len(raw) == 16, f"4.1 item 7: Sec-WebSocket-Key decodes to {len(raw)} bytes, not 16"
    assert request.single("Sec-WebSocket-Version") == "13", "4.1 item 9: Sec-WebSocket-Version must be 13"
    assert not request.get_all("Content-Length") and not request.get_all("Transfer-Encoding"), \
        "4.1: the opening request has no body"


def redirecting_client(uri: str, monkeypatch: pytest.MonkeyPatch) -> Client:
    """The echo client on `uri`, its TCP connection redirected to the fake server: the
    request carries the URI's host and port while the bytes go to 127.0.0.1."""

    async def client(real_uri: str, result: ClientResult, **options: Any) -> None:
        port = int(real_uri.rsplit(":", 1)[1].split("/")[0])
        real_open = common.client.open_connection

        async def open_connection(host: str, dialled_port: int, **kwargs: Any):
            result.dialled = (host, dialled_port)
            return await real_open("127.0.0.1", port, **kwargs)

        monkeypatch.setattr(common.client, "open_connection", open_connection)
        try:
            await echo_client(uri.format(port=port), result, **options)
        finally:
            monkeypatch.setattr(common.client, "open_connection", real_open)
    return client


@pytest.mark.parametrize("uri,host,target,dialled", URIS, ids=[u[0].split("//")[1] for u in URIS])
def test_request_is_valid(monkeypatch, uri, host, target, dialled):
    """4.1: GET, HTTP/1.1, the resource name (path and query, "/" when empty) as request
    target, Host with the port only when it is not the default (80 for ws), Upgrade:
    websocket, Connection: Upgrade, a base64 16-byte Sec-WebSocket-Key, Version 13; by
    default no Origin (4.1 item 8: "if the request is coming from a browser client")
    and no Sec-WebSocket-Protocol, and the permessage-deflate offer (RFC 7692 §5)."""
    requests: list[Request] = []

    async def script(peer: FakeServer) -> None:
        requests.append(await peer.handshake())
        await peer.close_normally()

    result = run_case(script, redirecting_client(uri, monkeypatch))
    assert result.error is None, repr(result.error)
    [request] = requests
    port = result.dialled[1] if "{port}" in host else None
    check_request(request, host.format(port=port), target)
    assert result.dialled == (dialled[0], int(str(dialled[1]).format(port=port)))
    assert not request.get_all("Origin") and not request.get_all("Sec-WebSocket-Protocol")
    assert request.get_all("Sec-WebSocket-Extensions") == ["permessage-deflate; client_max_window_bits"]


def test_request_key_differs_between_connections():
    """4.1 item 7: the key is "a randomly selected 16-byte value ... randomly selected for
    each connection": three connections, three different keys."""
    requests: list[Request] = []

    async def script(peer: FakeServer) -> None:
        requests.append(await peer.handshake())
        await peer.close_normally()

    async def three_clients(uri: str, result: ClientResult, **options: Any) -> None:
        for _ in range(3):
            await echo_client(uri, result, **options)
            assert result.error is None, repr(result.error)

    run_case(script, three_clients)
    keys = [r.single("Sec-WebSocket-Key") for r in requests]
    assert len(keys) == 3 and len(set(keys)) == 3, keys


@pytest.mark.parametrize("form", ["dict", "list"])
def test_request_origin_subprotocols_and_extra_headers(form):
    """4.1 items 8 and 10, 4.1 "additional header fields": origin= sends Origin,
    subprotocols= sends Sec-WebSocket-Protocol in order of preference, extra_headers (a
    dict, or a list of pairs that may repeat a name) are sent as given; compression=None
    sends no Sec-WebSocket-Extensions."""
    extra = {"Authorization": "Bearer t0ken", "X-Trace": "1"} if form == "dict" else \
        [("Authorization", "Bearer t0ken"), ("X-Trace", "1"), ("X-Trace", "2")]
    requests: list[Request] = []

    async def script(peer: FakeServer) -> None:
        requests.append(await peer.handshake(protocol="superchat"))
        await peer.close_normally()

    result = run_case(script, path="/app", origin="http://example.com", subprotocols=["chat", "superchat"],
                      extra_headers=extra, compression=None)
    assert result.error is None, repr(result.error)
    [request] = requests
    port = request.single("Host").rsplit(":", 1)[1]
    check_request(request, f"127.0.0.1:{port}", "/app")
    assert request.single("Origin") == "http://example.com"
    assert request.tokens("Sec-WebSocket-Protocol") == ["chat", "superchat"]
    assert not request.get_all("Sec-WebSocket-Extensions")
    pairs = extra.items() if isinstance(extra, dict) else extra
    for name in {n for n, _ in pairs}:
        assert request.get_all(name) == [v for n, v in pairs if n == name], request.raw
    assert result.ws.subprotocol == "superchat"

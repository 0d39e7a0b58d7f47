"""Fuzzing with a fixed seed: random and mutated frames and handshakes, to the parsers and to a live server.

Everything is reproducible (random.Random(SEED)); a failure names its case
number. The properties:

- common.protocol.Receiver never raises: every stream gives whole messages,
  pings, pongs, at most one close, and at most one ProtocolError (1002, 1007
  or 1009), last. Fed in random pieces it gives the same events as in one
  piece (the parser keeps no state that depends on how TCP split the bytes).
- The handshake functions (http11.parse_request and handshake.accept_request,
  the server's decision; the client side's parse_response and
  handshake.accept_response) either accept or raise the library's
  InvalidHandshake with a 4xx status; nothing else.
- A live server answers each mutated handshake with 101 or a short 4xx text,
  the one accept_request predicts with the server's own settings,
  and each mutated frame stream exactly as the reference Receiver predicts:
  the echoes of the messages before the end, then the close code it implies
  (the peer's own code, or 1002/1007/1009), or no close frame when the stream
  stopped mid-frame. Nothing is logged at ERROR level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import zlib

import pytest

from common import deflate, serve
from common.exceptions import InvalidHandshake, ProtocolError
from common.frames import Close, encode_frame
from common.handshake import accept_key, accept_request, accept_response
from common.http11 import MAX_HEAD, parse_request, parse_response
from common.protocol import Receiver

SEED = 20240611
FRAME_CASES = 4000        # streams of frames for the parser
HANDSHAKE_CASES = 4000    # request heads, and as many response heads
LIVE_CASES = 2000         # connections to a live server, 20 at a time
MAX_SIZE = 4096
BOUND = 10                # seconds: the longest any single wait may take

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ERROR_CODES = {1002, 1007, 1009}
NASTY = ["", " ", ",", ";", "=", '"', '""', "\\", "\t", "é", "\x7f", "\x00", "a" * 300, "13, 13", "websocket, h2c",
         "permessage-deflate; client_max_window_bits=8", "permessage-deflate; server_max_window_bits=16",
         "permessage-deflate; server_no_context_takeover; server_no_context_takeover", "x; y=\"1\"",
         "permessage-deflate; client_max_window_bits=\"15\"", "permessage-deflate;;", "null", "chat, superchat"]
# The handshake settings the functions are fuzzed with (every check and negotiation
# has something to do), and those of the live server, whose answers they predict.
FUZZ_SETTINGS = {"origins": [None, "null", "http://localhost:5678"], "subprotocols": ["chat"], "compression": "deflate"}
LIVE_SETTINGS = {"origins": None, "subprotocols": None, "compression": None}


# ---------------------------------------------------------------- generators


def random_text(rng: random.Random, n: int) -> str:
    alphabet = "abcxyz 0189,.\n" + "éß€" + "\U0001f600"
    return "".join(rng.choice(alphabet) for _ in range(n))


def random_payload(rng: random.Random, opcode: int) -> bytes:
    size = rng.choice([0, 1, 2, 5, 40, 125, 126, 200, 1000, 5000])
    if opcode in (0x8, 0x9, 0xA):
        size = min(size, 125)
    if opcode == 0x8 and size >= 2 and rng.random() < 0.8:
        code = rng.choice([1000, 1001, 1002, 1003, 1005, 1006, 1007, 1011, 1015, 2999, 3000, 4999, 5000, 0, 65535])
        return code.to_bytes(2, "big") + random_text(rng, size // 3).encode()[: size - 2]
    if opcode in (0x0, 0x1) and rng.random() < 0.8:   # valid UTF-8, cut at a character boundary
        return random_text(rng, size).encode()[:size].decode(errors="ignore").encode()
    return rng.randbytes(size)


def frame(rng: random.Random, opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False,
          masked: bool = True) -> bytes:
    data = encode_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=masked, mask_key=rng.randbytes(4))
    if rng.random() < 0.05 and len(payload) < 126:   # a non-minimal length encoding: allowed, must parse
        b0, b1 = data[0], data[1]
        length = (126).to_bytes(1, "big") + len(payload).to_bytes(2, "big")
        data = bytes((b0, (b1 & 0x80) | length[0])) + length[1:] + data[2:]
    return data


def random_stream(rng: random.Random, masked: bool = True, compress: zlib._Compress | None = None) -> bytes:
    """Mostly valid traffic: messages (some fragmented, some compressed), control frames between them."""
    parts = []
    for _ in range(rng.randint(1, 6)):
        kind = rng.random()
        if kind < 0.25:
            opcode = rng.choice([0x9, 0xA])
            parts.append(frame(rng, opcode, random_payload(rng, opcode), masked=masked))
        elif kind < 0.35:
            parts.append(frame(rng, 0x8, random_payload(rng, 0x8), masked=masked))
        else:
            opcode = rng.choice([0x1, 0x2])
            payload = random_payload(rng, opcode)
            rsv1 = compress is not None and rng.random() < 0.5
            if rsv1:
                payload = compress.compress(payload) + compress.flush(zlib.Z_SYNC_FLUSH)
                payload = payload[:-4] if payload.endswith(b"\x00\x00\xff\xff") else payload
            pieces = rng.randint(1, 4)
            cuts = sorted(rng.randint(0, len(payload)) for _ in range(pieces - 1))
            chunks = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
            for i, chunk in enumerate(chunks):
                parts.append(frame(rng, opcode if i == 0 else 0x0, chunk, fin=i == len(chunks) - 1,
                                   rsv1=rsv1 and i == 0, masked=masked))
                if rng.random() < 0.2:   # a control frame between fragments (§5.4)
                    parts.append(frame(rng, 0x9, rng.randbytes(rng.randint(0, 10)), masked=masked))
    return b"".join(parts)


def mutate(rng: random.Random, data: bytes, rounds: int | None = None) -> bytes:
    """Bit flips, byte swaps, insertions, deletions, duplications, truncation."""
    data = bytearray(data)
    for _ in range(rounds if rounds is not None else rng.choice([0, 0, 1, 1, 2, 4])):
        choice = rng.random()
        pos = rng.randint(0, max(0, len(data) - 1))
        if not data:
            data += rng.randbytes(rng.randint(1, 8))
        elif choice < 0.35:
            data[pos] ^= 1 << rng.randint(0, 7)
        elif choice < 0.5:
            data[pos] = rng.choice([0x00, 0x7E, 0x7F, 0x80, 0xFF, 0x0D, 0x0A, 0x20, 0x3A, rng.randint(0, 255)])
        elif choice < 0.65:
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif choice < 0.8:
            del data[pos : pos + rng.randint(1, 16)]
        elif choice < 0.9:
            end = min(len(data), pos + rng.randint(1, 64))
            data[pos:pos] = data[pos:end]
        else:
            del data[rng.randint(0, len(data)) :]
    return bytes(data)


def chunks(rng: random.Random, data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        size = rng.choice([1, 1, 2, 3, 7, 64, 1000, len(data)])
        out.append(data[pos : pos + size])
        pos += size
    return out


# ------------------------------------------------------------------ parsers


def normalized(events):
    """Events with errors compared by type and close code (their messages say where they struck)."""
    return [(op, (type(p).__name__, p.code)) if op is None else (op, p) for op, p in events]


def check_events(events, case):
    """Well-formed events: typed payloads, nothing after a close, one error at most and last."""
    for i, (opcode, payload) in enumerate(events):
        if opcode is None:
            assert isinstance(payload, ProtocolError) and payload.code in ERROR_CODES, (case, payload)
            assert i == len(events) - 1, (case, "events after an error")
        elif opcode == 0x1:
            assert isinstance(payload, str), case
        elif opcode in (0x2, 0x9, 0xA):
            assert isinstance(payload, bytes), case
            assert opcode == 0x2 or len(payload) <= 125, case
        else:
            assert opcode == 0x8 and isinstance(payload, Close), (case, opcode)
            assert i == len(events) - 1, (case, "events after a close")
        if opcode in (0x1, 0x2):
            assert len(payload) <= MAX_SIZE * 4, case   # str length counts characters


def make_receiver(expect_masked: bool, compressed: bool) -> Receiver:
    extension = deflate.PerMessageDeflate() if compressed else None
    return Receiver(expect_masked=expect_masked, max_size=MAX_SIZE, extension=extension)


def test_receiver_survives_random_and_mutated_frames():
    """Thousands of streams: no exception escapes feed(), events are well-formed, splitting changes nothing."""
    rng = random.Random(SEED)
    stats = {"messages": 0, "errors": 0, "closes": 0}
    for case in range(FRAME_CASES):
        expect_masked = rng.random() < 0.8
        compressed = rng.random() < 0.3
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15) if compressed else None
        if rng.random() < 0.1:
            stream = rng.randbytes(rng.randint(0, 300))           # pure noise
        else:
            stream = mutate(rng, random_stream(rng, masked=expect_masked, compress=compressor))
        whole = make_receiver(expect_masked, compressed).feed(stream)
        check_events(whole, case)
        receiver = make_receiver(expect_masked, compressed)
        pieces = [event for piece in chunks(rng, stream) for event in receiver.feed(piece)]
        assert normalized(pieces) == normalized(whole), f"case {case}: splitting the stream changed the events"
        stats["messages"] += sum(op in (1, 2) for op, _ in whole)
        stats["errors"] += sum(op is None for op, _ in whole)
        stats["closes"] += sum(op == 8 for op, _ in whole)
    # The mix exercised every path.
    assert min(stats.values()) > FRAME_CASES // 50, stats
    print(f"\n{FRAME_CASES} frame streams: {stats}")


def random_request(rng: random.Random) -> bytes:
    headers = [
        ("Host", rng.choice(["localhost:5678", "127.0.0.1", "[::1]:80", "example.com"])),
        ("Upgrade", rng.choice(["websocket", "WebSocket", "websocket, h2c"])),
        ("Connection", rng.choice(["Upgrade", "keep-alive, Upgrade", "upgrade"])),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
    ]
    optional = [("Origin", rng.choice(["null", "http://localhost:5678", "https://evil.example"])),
                ("Sec-WebSocket-Protocol", rng.choice(["chat", "chat, superchat", "x"])),
                ("Sec-WebSocket-Extensions", rng.choice(NASTY[-8:] + ["permessage-deflate"])),
                ("User-Agent", "fuzz"), ("Cookie", "a=b")]
    headers += rng.sample(optional, rng.randint(0, len(optional)))
    rng.shuffle(headers)
    for _ in range(rng.choice([0, 0, 1, 2])):   # header-level mischief: drop, repeat, or garble a value
        i = rng.randrange(len(headers))
        action = rng.random()
        if action < 0.3:
            del headers[i]
        elif action < 0.6:
            headers.insert(i, headers[i])
        else:
            headers[i] = (headers[i][0], rng.choice(NASTY))
    method = rng.choice(["GET"] * 8 + ["POST", "HEAD", "get", "CONNECT"])
    target = rng.choice(["/", "/chat", "/a?b=c", "*", "http://x/", "/%00", "/" + "a" * 9000])
    version = rng.choice(["HTTP/1.1"] * 8 + ["HTTP/1.0", "HTTP/2", "http/1.1"])
    lines = [f"{method} {target} {version}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def server_decision(head: bytes, settings: dict) -> int:
    """What a server with these settings decides for a complete request head: 101, or the 4xx status of the error."""
    try:
        accept = accept_request(parse_request(head), **settings)
    except InvalidHandshake as exc:
        assert 400 <= exc.status < 500, (exc.status, exc)
        return int(exc.status)
    assert accept.headers[:2] == (("Upgrade", "websocket"), ("Connection", "Upgrade")), accept
    return 101


def test_handshake_functions_accept_or_raise_invalid_handshake():
    """Mutated requests and responses: accepted, or InvalidHandshake with a 4xx status, never another error."""
    rng = random.Random(SEED + 1)
    statuses: dict[int, int] = {}
    for case in range(HANDSHAKE_CASES):
        head = random_request(rng)
        if rng.random() < 0.7:
            head = mutate(rng, head)
            if not head.endswith(b"\r\n\r\n"):
                head += b"\r\n\r\n"
        status = server_decision(head, FUZZ_SETTINGS)
        statuses[status] = statuses.get(status, 0) + 1
    assert statuses.get(101, 0) > HANDSHAKE_CASES // 20 and len(statuses) >= 5, statuses
    accept = accept_key(KEY)
    base = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n").encode()
    outcomes = {"accepted": 0, "refused": 0}
    for case in range(HANDSHAKE_CASES):
        head = mutate(rng, base)
        try:
            accept_response(parse_response(head), KEY, subprotocols=["chat"], compression="deflate")
            outcomes["accepted"] += 1
        except InvalidHandshake:
            outcomes["refused"] += 1
    assert min(outcomes.values()) > HANDSHAKE_CASES // 20, outcomes
    print(f"\n{HANDSHAKE_CASES} requests: statuses {dict(sorted(statuses.items()))}; "
          f"{HANDSHAKE_CASES} responses: {outcomes}")


# --------------------------------------------------------------- live server


def expected_outcome(stream: bytes) -> tuple[list, bytes | None, bool, list[bytes]]:
    """What the server must send back for this client stream, from the reference Receiver: (messages
    it echoes, the close payload it sends or None, whether the client broke the protocol, pings it answers)."""
    messages, pings = [], []
    for opcode, payload in Receiver(expect_masked=True, max_size=MAX_SIZE).feed(stream):
        if opcode in (0x1, 0x2):
            messages.append(payload)
        elif opcode == 0x9:
            pings.append(payload)
        elif opcode == 0x8:
            return messages, payload.serialize(), False, pings   # the peer's close, echoed as it came
        elif opcode is None:
            return messages, Close(payload.code, "").serialize()[:2], True, pings   # our code; the reason is ours
    return messages, None, False, pings


def parse_server_frames(data: bytes) -> list:
    """The server's frames, checked strictly by a client-side Receiver (unmasked, well-formed)."""
    events = Receiver(expect_masked=False, max_size=None).feed(data)
    assert all(op is not None for op, _ in events), events[-1:]
    return events


@pytest.fixture
def no_errors(caplog):
    caplog.set_level(logging.INFO)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, "; ".join(f"{r.name}: {r.getMessage()}" for r in bad)


async def echo(ws):
    async for message in ws:
        await ws.send(message)


def test_live_server_answers_every_fuzzed_connection_as_predicted(no_errors):
    """Mutated handshakes get 101 or a 4xx text; mutated frame streams get the predicted echoes and close."""
    rng = random.Random(SEED + 2)
    handshake = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    tally: dict[str, int] = {}

    cases = []                                            # drawn first: the same cases whatever the timing
    for _ in range(LIVE_CASES):
        if rng.random() < 0.3:                            # a mutated handshake alone
            request, stream = mutate(rng, random_request(rng), rounds=rng.randint(0, 3)), b""
        else:
            request, stream = handshake, mutate(rng, random_stream(rng))
        cases.append((request, stream, chunks(rng, request + stream)))

    async def one(port: int, case: int) -> None:
        request, stream, pieces = cases[case]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for piece in pieces:
                writer.write(piece)
            writer.write_eof()                            # the end of what we say: the server sees EOF
            answer = bytearray()
            with contextlib.suppress(ConnectionResetError):
                async with asyncio.timeout(BOUND):
                    while chunk := await reader.read(65536):
                        answer += chunk
        finally:
            writer.close()
        head, sep, rest = bytes(answer).partition(b"\r\n\r\n")
        assert sep, f"case {case}: no HTTP answer to {request[:80]!r}: {bytes(answer[:80])!r}"
        # A mutated request may carry bytes after its blank line: to the server, they are frames.
        sent = request + stream
        end = sent.find(b"\r\n\r\n") + 4
        request, stream = (sent[:end], sent[end:]) if end >= 4 else (sent, b"")
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            assert 400 <= status < 500, (case, head)
            assert b"Content-Type: text/plain" in head and 0 < len(rest) < 600, (case, head, rest)
            if end >= 4 and len(request) < MAX_HEAD:
                assert status == server_decision(request, LIVE_SETTINGS), (case, request[:200], head)
            tally[f"HTTP {status}"] = tally.get(f"HTTP {status}", 0) + 1
            return
        messages, close, failed, pings = expected_outcome(stream)
        events = parse_server_frames(rest)
        echoed = [p for op, p in events if op in (0x1, 0x2)]
        pongs = [p for op, p in events if op == 0xA]
        closes = [p for op, p in events if op == 0x8]
        # Messages before an error are all answered (strict order); before the peer's close, those
        # the handler reached before the answering close went out (none may follow it, §5.5.1).
        if failed:
            assert echoed == messages, (case, len(echoed), len(messages))
        else:
            assert echoed == messages[: len(echoed)], case
        assert pongs == pings[: len(pongs)], case
        if close is None:
            assert closes == [], (case, "a close frame where the stream ended mid-frame", closes)
            tally["no close (stream ended)"] = tally.get("no close (stream ended)", 0) + 1
        else:
            assert len(closes) == 1, (case, closes)
            assert closes[0].serialize()[: len(close)] == close, (case, closes[0], close)
            key = f"close {closes[0].code}"
            tally[key] = tally.get(key, 0) + 1

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, max_size=MAX_SIZE, open_timeout=BOUND, close_timeout=1,
                         ping_interval=None, **LIVE_SETTINGS) as srv:
            port = srv.sockets[0].getsockname()[1]
            gate = asyncio.Semaphore(20)

            async def limited(case: int) -> None:
                async with gate:
                    await one(port, case)

            await asyncio.gather(*(limited(case) for case in range(LIVE_CASES)))

    asyncio.run(asyncio.wait_for(main(), 60))
    assert tally.get("close 1002", 0) and tally.get("HTTP 400", 0) and tally.get("no close (stream ended)", 0), tally
    print(f"\n{LIVE_CASES} live connections: {dict(sorted(tally.items()))}")

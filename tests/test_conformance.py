"""RFC 6455 conformance of `python3 -m common echo`, over raw sockets.

In the spirit of the Autobahn testsuite categories 1-10 (1 framing, 2 ping/pong,
3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8, 7 close, 9 limits,
10 auto-fragmentation), plus the opening handshake and client masking.
No WebSocket library is used on the client side: tests/rawws.py builds every byte.

Every test names the RFC 6455 rule it checks. Where the RFC leaves room (MAY,
"such as", "typically"), the docstring says so and states the rule this project
has chosen instead; those tests are marked "UNCLEAR IN RFC".

Each wait is a bounded socket read (rawws.TIMEOUT = 5 s); there are no sleeps.
Two echo servers run per module: the default one and one with --max-size 1000.
Set WSLAB_ECHO_CMD to test another server that takes the same options.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

try:                                    # tests/ as a package or as a plain directory
    from . import rawws
except ImportError:
    import rawws

CONT, TEXT, BINARY, CLOSE, PING, PONG = rawws.CONT, rawws.TEXT, rawws.BINARY, rawws.CLOSE, rawws.PING, rawws.PONG
RSV1, RSV2, RSV3 = rawws.RSV1, rawws.RSV2, rawws.RSV3
RawWS, build_frame, build_header = rawws.RawWS, rawws.build_frame, rawws.build_header
close_payload, fragments, http_request = rawws.close_payload, rawws.fragments, rawws.http_request

REPO_ROOT = Path(__file__).resolve().parent.parent
KiB, MiB = 1 << 10, 1 << 20
LIMIT = 1000                            # --max-size of the second server

DATA = [TEXT, BINARY]
DATA_IDS = ["text", "binary"]


def payload_for(opcode: int, n: int) -> bytes:
    """n bytes of payload: valid UTF-8 for TEXT (ASCII), all byte values for BINARY."""
    if opcode == TEXT:
        return (b"0123456789abcdefghijklmnopqrstuvwxyz" * (n // 36 + 1))[:n]
    return (bytes(range(256)) * (n // 256 + 1))[:n]


# ===================================================================== fixtures

@pytest.fixture(scope="module")
def limited_server():
    """A second echo server, with --max-size 1000 (``echo_server``, with the defaults, is in conftest.py)."""
    with rawws.EchoServer(REPO_ROOT, ["--max-size", str(LIMIT)]) as server:
        yield server


@pytest.fixture
def ws(echo_server):
    conn = RawWS.connect(echo_server.host, echo_server.port, "/conformance")
    try:
        yield conn
    finally:
        conn.close_socket()


@pytest.fixture
def lws(limited_server):
    conn = RawWS.connect(limited_server.host, limited_server.port, "/limited")
    try:
        yield conn
    finally:
        conn.close_socket()


VALID = build_frame(TEXT, b"valid message before the bad frame")


def fail_after_valid(conn: RawWS, bad: bytes, code: int, *, reply: bool = True) -> None:
    """Send a valid text message and `bad` in ONE write; the echo must come first, then CLOSE `code`.

    Processing is in order (RFC 6455 section 5.4 / 6.2): the message received before
    the protocol error is complete and is delivered; only then is the connection failed.
    """
    conn.send_raw(VALID + bad)
    conn.expect_message(TEXT, b"valid message before the bad frame")
    conn.expect_close(code, reply=reply)


def echo_works(server) -> None:
    """A fresh connection still gets a text echo (the server keeps serving)."""
    conn = RawWS.connect(server.host, server.port, "/still-alive")
    try:
        conn.send_frame(TEXT, b"still alive")
        conn.expect_message(TEXT, b"still alive")
        conn.send_close(1000)
        conn.expect_close(1000, reply=False)
    finally:
        conn.close_socket()


# ===================================================================== handshake

KEY = base64.b64encode(b"0123456789abcdef").decode()


def upgrade_request(method="GET", version="HTTP/1.1", drop=(), **override) -> bytes:
    headers = {"Host": "127.0.0.1", "Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": KEY, "Sec-WebSocket-Version": "13"}
    for name in drop:
        del headers[name]
    headers.update({k.replace("_", "-"): v for k, v in override.items()})
    text = f"{method} /hs {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    if method == "POST":
        text = text[:-2] + "Content-Length: 0\r\n\r\n"
    return text.encode()


def test_handshake_ok(echo_server):
    """4.2.2: 101, Upgrade: websocket, Connection: Upgrade, Sec-WebSocket-Accept =
    base64(SHA-1(key + GUID)); no extension or subprotocol when none was offered (4.2.2, 9.1).
    (All checks are made by RawWS.connect for every connection in this module.)"""
    conn = RawWS.connect(echo_server.host, echo_server.port, "/any/path?x=1")
    try:
        conn.send_frame(TEXT, b"hi")
        conn.expect_message(TEXT, b"hi")
    finally:
        conn.close_socket()


def test_handshake_header_case_and_token_list(echo_server):
    """4.2.1: header names and the 'websocket'/'Upgrade' values are case-insensitive, and
    Connection is a token list (browsers send 'keep-alive, Upgrade')."""
    status, headers, _ = http_request(echo_server.host, echo_server.port, upgrade_request(
        drop=("Upgrade", "Connection"), upgrade="WebSocket", connection="keep-alive, Upgrade"))
    assert status == 101, (status, headers)
    assert headers.get("sec-websocket-accept") == rawws.accept_for(KEY)


BAD_HANDSHAKES = [
    # (id, request, acceptable statuses, docstring note)
    ("version-8", upgrade_request(Sec_WebSocket_Version="8"), {426}),
    ("version-missing", upgrade_request(drop=("Sec-WebSocket-Version",)), {400, 426}),
    ("key-missing", upgrade_request(drop=("Sec-WebSocket-Key",)), {400}),
    ("key-not-base64", upgrade_request(Sec_WebSocket_Key="not base64 at all!!"), {400}),
    ("key-15-bytes", upgrade_request(Sec_WebSocket_Key=base64.b64encode(b"x" * 15).decode()), {400}),
    ("key-17-bytes", upgrade_request(Sec_WebSocket_Key=base64.b64encode(b"x" * 17).decode()), {400}),
    ("post", upgrade_request(method="POST"), {400, 405}),
    ("upgrade-missing", upgrade_request(drop=("Upgrade", "Connection")), {426}),
    ("upgrade-not-websocket", upgrade_request(Upgrade="h2c"), {400, 426}),
    ("connection-missing", upgrade_request(drop=("Connection",)), {400, 426}),
    ("http-1.0", upgrade_request(version="HTTP/1.0"), {400, 426, 505}),
]


@pytest.mark.parametrize("req,statuses", [b[1:] for b in BAD_HANDSHAKES], ids=[b[0] for b in BAD_HANDSHAKES])
def test_handshake_rejected(echo_server, req, statuses):
    """4.2.1 / 4.2.2 item 4 / 4.4: a request that is not a valid opening handshake is answered
    with an HTTP error, and the server keeps serving new connections afterwards.

    Project rules: wrong Sec-WebSocket-Version -> 426 with 'Sec-WebSocket-Version: 13'
    (4.4 says "such as 426"); missing/invalid key (must decode to 16 bytes, 4.2.1 item 5)
    -> 400; POST -> 405 or 400 (4.2.1 item 1: GET); no Upgrade at all -> 426 (RFC 7231
    6.5.15, the API doc). UNCLEAR IN RFC: a missing version, a foreign Upgrade token,
    a missing Connection header and HTTP/1.0 only need "an appropriate error code
    (such as 400 Bad Request)" (4.2.2), so several statuses are accepted there."""
    status, headers, _ = http_request(echo_server.host, echo_server.port, req)
    assert status in statuses, f"expected HTTP {statuses}, got {status} {headers}"
    if status == 426 and b"Sec-WebSocket-Version: 13" not in req:
        assert "13" in [v.strip() for v in headers.get("sec-websocket-version", "").split(",")], \
            f"4.4: the 426 answer must name the supported version: {headers}"
    echo_works(echo_server)


@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING, CLOSE], ids=["text", "binary", "ping", "close"])
def test_unmasked_client_frame(ws, opcode):
    """5.1: a server MUST close the connection upon receiving a frame that is not masked.
    UNCLEAR IN RFC: sending a Close frame with 1002 first is only a MAY; this project
    requires the close 1002, after echoing the valid message received before it."""
    payload = close_payload(1000) if opcode == CLOSE else b"unmasked"
    fail_after_valid(ws, build_frame(opcode, payload, mask=False), 1002)


# ===================================================================== 1. framing

LENGTHS = [0, 125, 126, 127, 128, 65535, 65536]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("opcode", DATA, ids=DATA_IDS)
def test_1_echo_lengths(ws, opcode, length):
    """5.2 payload length: 0-125 in 7 bits, 126-65535 in the 16-bit form (126),
    65536+ in the 64-bit form (127); 5.6: text and binary are echoed byte-exact.
    The server's echo must use the minimal length encoding (checked in recv_frame)."""
    payload = payload_for(opcode, length)
    frame = ws.send_frame(opcode, payload)
    expected_form = 2 + (0 if length < 126 else 2 if length < 65536 else 8)
    assert len(frame) == expected_form + 4 + length     # the length form we meant to test
    ws.expect_message(opcode, payload)


def test_1_echo_16mib_binary(ws):
    """5.2 (64-bit length) and 5.3 (masking) on a 16 MiB binary frame, echoed byte-exact."""
    payload = os.urandom(16 * MiB)
    ws.send_frame(BINARY, payload)
    ws.expect_message(BINARY, payload)


@pytest.mark.parametrize("opcode", DATA, ids=DATA_IDS)
def test_1_frame_in_many_tcp_writes(ws, opcode):
    """5.2: framing does not depend on TCP segmentation; a 300-byte frame written in
    1-byte writes (header split too) and then in 7-byte writes is echoed."""
    payload = payload_for(opcode, 300)
    ws.send_split(build_frame(opcode, payload), 1)
    ws.expect_message(opcode, payload)
    ws.send_split(build_frame(opcode, payload), 7)
    ws.expect_message(opcode, payload)


def test_1_pipelined_messages(ws):
    """5.4/6.2: 100 messages written at once are echoed one by one, in order."""
    msgs = [(TEXT if i % 2 else BINARY, f"message {i}".encode() * (i % 7)) for i in range(100)]
    ws.send_raw(b"".join(build_frame(op, p) for op, p in msgs))
    for op, p in msgs:
        ws.expect_message(op, p)


@pytest.mark.parametrize("length,form", [(5, 16), (5, 64), (200, 64)], ids=["5-as-16bit", "5-as-64bit", "200-as-64bit"])
def test_1_non_minimal_length(ws, length, form):
    """5.2: "the minimal number of bytes MUST be used to encode the length".
    UNCLEAR IN RFC: this binds the sender; the receiver's reaction is not prescribed,
    so either an echo or a close 1002 is accepted here (Autobahn has no such case)."""
    payload = payload_for(TEXT, length)
    ws.send_frame(TEXT, payload, length_form=form)
    frame = ws.recv_frame()
    if frame.opcode == CLOSE:
        assert frame.close_code == 1002, f"non-minimal length: close must be 1002, got {frame.close_code}"
        ws.send_frame(CLOSE, frame.payload[:2])
        ws.expect_tcp_closed()
    else:
        assert (frame.opcode, frame.fin) == (TEXT, True) and frame.payload == payload, frame


# ===================================================================== 2. ping / pong

@pytest.mark.parametrize("length", [0, 125])
def test_2_ping_gets_pong(ws, length):
    """5.5.2/5.5.3: a Pong answers a Ping with "Application data" identical to the Ping's."""
    payload = bytes(range(length))
    ws.send_frame(PING, payload)
    frame = ws.recv_frame()
    assert frame.opcode == PONG and frame.payload == payload, frame


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE], ids=["ping", "pong", "close"])
def test_2_control_frame_126_bytes(ws, opcode):
    """5.5: "All control frames MUST have a payload length of 125 bytes or less" -> 1002
    (checked for ping, pong and close; uses the 16-bit length form)."""
    payload = close_payload(1000, "x" * 124) if opcode == CLOSE else b"x" * 126
    assert len(payload) == 126
    fail_after_valid(ws, build_frame(opcode, payload), 1002)


@pytest.mark.parametrize("length", [0, 125])
def test_2_unsolicited_pong_ignored(ws, length):
    """5.5.3: "A Pong frame MAY be sent unsolicited ... A response to an unsolicited Pong
    frame is not expected." The next thing received is the echo of the following text."""
    ws.send_raw(build_frame(PONG, b"p" * length) + build_frame(TEXT, b"after pong"))
    frame = ws.recv_frame()
    assert (frame.opcode, frame.payload) == (TEXT, b"after pong"), frame


def test_2_ten_pings_ten_pongs(ws):
    """5.5.2/5.5.3: ten pings written at once get ten pongs with the same payloads, in order.
    UNCLEAR IN RFC: 5.5.3 lets an endpoint that has not yet answered earlier pings answer
    only the most recent one; this project (like Autobahn 2.10/2.11) requires all ten."""
    payloads = [f"ping {i}".encode() for i in range(10)]
    ws.send_raw(b"".join(build_frame(PING, p) for p in payloads))
    got = []
    for _ in payloads:
        frame = ws.recv_frame()
        assert frame.opcode == PONG, frame
        got.append(frame.payload)
    assert got == payloads


def test_2_ping_answered_one_by_one(ws):
    """5.5.2: each Ping gets its Pong "as soon as practical" (unambiguous: one at a time)."""
    for i in range(10):
        ws.send_frame(PING, f"single {i}".encode())
        frame = ws.recv_frame()
        assert (frame.opcode, frame.payload) == (PONG, f"single {i}".encode()), frame


@pytest.mark.parametrize("writes", [1, [2, 4, 3]], ids=["bytewise", "header-mask-payload"])
def test_2_ping_in_several_tcp_writes(ws, writes):
    """5.2/5.5.2: a Ping written in several TCP writes is still answered with its payload."""
    ws.send_split(build_frame(PING, b"split ping payload"), writes)
    frame = ws.recv_frame()
    assert (frame.opcode, frame.payload) == (PONG, b"split ping payload"), frame


# ===================================================================== 3. reserved bits

RSV_OPCODES = {"text": (TEXT, b"rsv text"), "binary": (BINARY, b"rsv binary"),
               "ping": (PING, b"rsv ping"), "pong": (PONG, b"rsv pong"), "close": (CLOSE, close_payload(1000))}


@pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3], ids=["rsv1", "rsv2", "rsv3", "rsv123"])
@pytest.mark.parametrize("kind", list(RSV_OPCODES))
def test_3_reserved_bits(ws, kind, rsv):
    """5.2: RSV1-3 "MUST be 0 unless an extension is negotiated ... If a nonzero value is
    received ... the receiving endpoint MUST _Fail the WebSocket Connection_" -> 1002
    (7.4.1). No permessage-deflate was offered. Strict order: the valid text written
    just before, in the same write, is echoed before the close."""
    opcode, payload = RSV_OPCODES[kind]
    fail_after_valid(ws, build_frame(opcode, payload, rsv=rsv), 1002)


def test_3_reserved_bit_on_continuation(ws):
    """5.2: RSV bits on a continuation frame of a fragmented message -> 1002."""
    bad = build_frame(TEXT, b"frag", fin=False) + build_frame(CONT, b"ment", rsv=RSV1)
    fail_after_valid(ws, bad, 1002)


# ===================================================================== 4. opcodes

@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF], ids=lambda o: f"0x{o:X}")
@pytest.mark.parametrize("length", [0, 10])
def test_4_reserved_opcode(ws, opcode, length):
    """5.2: opcodes 0x3-0x7 (non-control) and 0xB-0xF (control) are reserved; "If an unknown
    opcode is received, the receiving endpoint MUST _Fail the WebSocket Connection_" -> 1002.
    The valid text written just before, in the same write, is echoed first."""
    fail_after_valid(ws, build_frame(opcode, b"r" * length), 1002)


# ===================================================================== 5. fragmentation

@pytest.mark.parametrize("count", [2, 3, 1000])
@pytest.mark.parametrize("opcode", DATA, ids=DATA_IDS)
def test_5_fragmented_message(ws, opcode, count):
    """5.4: a message in `count` fragments (first frame opcode + FIN=0, then CONT frames,
    last with FIN=1) is echoed as one message; 1000 fragments of 1 byte included."""
    payload = payload_for(opcode, count)      # count bytes -> count fragments of 1 byte
    ws.send_raw(fragments(opcode, payload, 1))
    ws.expect_message(opcode, payload)


@pytest.mark.parametrize("shape", ["empty-first", "empty-middle", "empty-last", "all-empty"])
def test_5_empty_fragments(ws, shape):
    """5.4/5.2: zero-length fragments are legal anywhere in a fragmented message."""
    parts = {"empty-first": [b"", b"abc", b"def"], "empty-middle": [b"abc", b"", b"def"],
             "empty-last": [b"abc", b"def", b""], "all-empty": [b"", b"", b""]}[shape]
    ws.send_raw(b"".join(build_frame(TEXT if i == 0 else CONT, p, fin=(i == len(parts) - 1))
                         for i, p in enumerate(parts)))
    ws.expect_message(TEXT, b"".join(parts))


@pytest.mark.parametrize("opcode", DATA, ids=DATA_IDS)
def test_5_ping_between_fragments(ws, opcode):
    """5.4: "Control frames MAY be injected in the middle of a fragmented message" and 5.5.2:
    the Pong is sent while the message is still incomplete (we wait for it before sending
    the rest); the message is then echoed whole."""
    ws.send_raw(build_frame(opcode, b"first,", fin=False) + build_frame(PING, b"mid 1"))
    frame = ws.recv_frame()
    assert (frame.opcode, frame.payload) == (PONG, b"mid 1"), frame
    ws.send_raw(build_frame(CONT, b"second,", fin=False) + build_frame(PING, b"mid 2")
                + build_frame(PONG, b"unsolicited") + build_frame(CONT, b"third", fin=True))
    frame = ws.recv_frame()
    assert (frame.opcode, frame.payload) == (PONG, b"mid 2"), frame
    ws.expect_message(opcode, b"first,second,third")


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE], ids=["ping", "pong", "close"])
@pytest.mark.parametrize("follow", [False, True], ids=["alone", "with-cont"])
def test_5_fragmented_control_frame(ws, opcode, follow):
    """5.5: "Control frames themselves MUST NOT be fragmented" (FIN=0 on a control frame)
    -> 1002, whether or not a continuation follows."""
    payload = close_payload(1000) if opcode == CLOSE else b"frag"
    bad = build_frame(opcode, payload, fin=False) + (build_frame(CONT, b"ment") if follow else b"")
    fail_after_valid(ws, bad, 1002)


@pytest.mark.parametrize("fin", [True, False], ids=["fin", "nofin"])
def test_5_continuation_without_message(ws, fin):
    """5.4: a continuation frame (opcode 0) with no fragmented message in progress -> 1002."""
    fail_after_valid(ws, build_frame(CONT, b"orphan", fin=fin), 1002)


@pytest.mark.parametrize("intruder", DATA, ids=DATA_IDS)
def test_5_new_message_inside_fragmented(ws, intruder):
    """5.4: fragments of one message are not interleaved with another message: a TEXT or
    BINARY frame while a fragmented message is in progress -> 1002."""
    bad = build_frame(TEXT, b"start", fin=False) + build_frame(intruder, b"intruder")
    fail_after_valid(ws, bad, 1002)


def test_5_four_mib_in_64_byte_fragments(ws):
    """5.4 and 10.4: a 4 MiB message in 65,536 fragments of 64 bytes is echoed: the limit
    is on message size, not on the number of fragments."""
    payload = os.urandom(4 * MiB)
    ws.send_raw(fragments(BINARY, payload, 64))
    ws.expect_message(BINARY, payload)


# ===================================================================== 6. UTF-8

VALID_TEXTS = {
    "empty": "",
    "ascii": "Hello, World!",
    "kosme": "\u03ba\u1f79\u03c3\u03bc\u03b5",            # Markus Kuhn's "κόσμε"
    "two-byte": "\u00e9\u00e8\u00ea \u0100\u07ff",
    "three-byte": "\u20ac \u0800 \ud7ff \ue000 \ufffd",
    "U+FFFF": "\uffff",
    "four-byte": "\U0001d11e \U0001f600",
    "U+10FFFF": "\U0010ffff",
    "nul-and-controls": "\x00\x01\x7f",
    "mixed": "a\u00e9\u20ac\U0001f600z\U0010ffff\uffff",
}


@pytest.mark.parametrize("name", list(VALID_TEXTS))
def test_6_valid_utf8_echoed(ws, name):
    """5.6/8.1: text frames carry UTF-8; valid texts (1- to 4-byte sequences, U+FFFF,
    U+10FFFF, the noncharacters are valid UTF-8) are echoed exactly."""
    data = VALID_TEXTS[name].encode("utf-8")
    ws.send_frame(TEXT, data)
    ws.expect_message(TEXT, data)


@pytest.mark.parametrize("name", ["kosme", "four-byte", "mixed"])
def test_6_valid_utf8_split_everywhere(ws, name):
    """8.1/5.4: UTF-8 is validated over the whole message, not per frame: a valid text cut
    into 2 fragments at every byte position (inside multibyte sequences too) is echoed."""
    data = VALID_TEXTS[name].encode("utf-8")
    for cut in range(len(data) + 1):
        ws.send_raw(build_frame(TEXT, data[:cut], fin=False) + build_frame(CONT, data[cut:]))
        ws.expect_message(TEXT, data)


INVALID_UTF8 = {
    "overlong-2-slash": b"\xc0\xaf",
    "overlong-2-max": b"\xc1\xbf",
    "overlong-3-slash": b"\xe0\x80\xaf",
    "overlong-3-max": b"\xe0\x9f\xbf",
    "overlong-4-slash": b"\xf0\x80\x80\xaf",
    "overlong-4-max": b"\xf0\x8f\xbf\xbf",
    "surrogate-high": b"\xed\xa0\x80",
    "surrogate-low": b"\xed\xbf\xbf",
    "surrogate-pair": b"\xed\xa0\x80\xed\xb0\x80",
    "above-10ffff": b"\xf4\x90\x80\x80",
    "f5-lead": b"\xf5\x80\x80\x80",
    "5-byte": b"\xf8\x88\x80\x80\x80",
    "6-byte": b"\xfc\x84\x80\x80\x80\x80",
    "fe": b"\xfe",
    "ff": b"\xff",
    "lone-continuation": b"\x80",
    "lone-continuation-bf": b"\xbf",
    "continuations": b"\x80\xbf\x80",
    "truncated-2-at-end": b"\xce",
    "truncated-3-at-end": b"\xe2\x82",
    "truncated-4-at-end": b"\xf0\x9f\x98",
    "truncated-in-middle": b"\xce" + b"def",
    "kosme-then-surrogate": "\u03ba\u1f79\u03c3\u03bc\u03b5".encode() + b"\xed\xa0\x80edited",
}


@pytest.mark.parametrize("mode", ["one-frame", "1-byte-fragments"])
@pytest.mark.parametrize("name", list(INVALID_UTF8))
def test_6_invalid_utf8(ws, name, mode):
    """8.1: "When an endpoint is to interpret a byte stream as UTF-8 but finds that the
    byte stream is not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail the
    WebSocket Connection_" -> 1007 (7.4.1). Overlongs, surrogates (D800-DFFF), code points
    above U+10FFFF, F5-FF, lone continuation bytes, a sequence truncated at message end;
    both in one frame and with the message cut into 1-byte fragments."""
    data = b"ab" + INVALID_UTF8[name] + (b"" if "at-end" in name else b"yz")
    if mode == "one-frame":
        bad = build_frame(TEXT, data)
    else:
        bad = fragments(TEXT, data, 1)
    fail_after_valid(ws, bad, 1007)


@pytest.mark.parametrize("first,second", [
    ("\u03ba\u1f79\u03c3\u03bc\u03b5".encode(), b"\xed\xa0\x80edited"),
    (b"hello", b"\xf4\x90\x80\x80world"),
    (b"hello \xf4", b"\x90\x80\x80"),                   # invalid sequence straddles the fragments
    (b"hello", b"\xc0\xaf"),
], ids=["kosme-surrogate", "above-10ffff", "straddling", "overlong"])
def test_6_fail_fast_between_fragments(ws, first, second):
    """8.1 fail fast: first fragment valid, second fragment contains an invalid sequence,
    the final fragment is NEVER sent: the server must close with 1007 without waiting for
    the end of the message. UNCLEAR IN RFC: 8.1 does not say *when*; this project (like
    Autobahn 6.4.x 'strict') requires it as soon as the invalid bytes arrive."""
    ws.send_raw(build_frame(TEXT, first, fin=False))
    ws.send_raw(build_frame(CONT, second, fin=False))
    ws.expect_close(1007)


@pytest.mark.parametrize("prefix", [b"abc\xed\xa0\x80defg", b"abc\xc0\xafdefgh", b"abcd\xf4\x90\x80\x80ef",
                                    b"\x80abcdefghi", b"abcdefg\xff\xfe\xfd"],
                         ids=["surrogate", "overlong", "above-10ffff", "continuation", "ff"])
@pytest.mark.parametrize("where", ["single-frame", "continuation-frame"])
def test_6_fail_fast_inside_one_frame(ws, prefix, where):
    """8.1 fail fast within ONE frame: the header announces 100 payload bytes, only the first
    10 (containing an invalid sequence) are written and the rest is held back: the server
    must close with 1007 before the rest of the payload arrives (we cannot reply with a
    Close, we are mid-frame). UNCLEAR IN RFC: timing not specified in 8.1; project rule
    (Autobahn 6.4.3/6.4.4 strict)."""
    assert len(prefix) == 10
    payload = prefix + b"x" * 90
    if where == "continuation-frame":
        ws.send_frame(TEXT, b"ok so far", fin=False)
        opcode = CONT
    else:
        opcode = TEXT
    frame = build_frame(opcode, payload)
    ws.send_split(frame[:6 + 10], [6, 10])          # header+mask, then 10 payload bytes
    ws.expect_close(1007, reply=False)


# ===================================================================== 7. close

def test_7_close_empty(ws):
    """5.5.1: a Close answered by a Close; 7.1.5/7.4.1: with no status code received, the
    reply carries no code or 1000 (1005 MUST NOT be sent). UNCLEAR IN RFC: "typically echos
    the status code it received" - there is none, so both answers are accepted. Then the
    server closes TCP first (7.1.1: "the server SHOULD close the underlying TCP connection")."""
    ws.send_frame(CLOSE, b"")
    ws.expect_close(None, 1000, reply=False)


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
               3000, 3999, 4000, 4999]


@pytest.mark.parametrize("code", VALID_CODES)
def test_7_close_valid_code_echoed(ws, code):
    """7.4.1/7.4.2 valid codes (1000-1003, 1007-1011; 3000-4999 registered/private) are
    echoed in the reply Close (5.5.1), then the server closes TCP.
    UNCLEAR IN RFC: 5.5.1 only says the reply "typically echos the status code"; this
    project requires the echo. 1012-1014 were registered with IANA after RFC 6455;
    this project counts them as valid (and 1015 as invalid, it is never sent)."""
    ws.send_close(code, "bye")
    ws.expect_close(code, reply=False)


INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", INVALID_CODES)
def test_7_close_invalid_code(ws, code):
    """7.4.1/7.4.2: 0-999 are not used, 1004 is reserved, 1005/1006/1015 "MUST NOT be set
    as a status code in a Close control frame", 1016-2999 are reserved for future RFCs,
    5000+ are undefined -> a protocol error, 1002. The valid text before is echoed first."""
    fail_after_valid(ws, build_frame(CLOSE, close_payload(code)), 1002)


def test_7_close_one_byte_payload(ws):
    """5.5.1: a close body starts with a 2-byte status code; a 1-byte body -> 1002."""
    fail_after_valid(ws, build_frame(CLOSE, b"\x03"), 1002)


@pytest.mark.parametrize("reason", [b"\xed\xa0\x80", b"ok \xc0\xaf", b"\xce"], ids=["surrogate", "overlong", "truncated"])
def test_7_close_reason_invalid_utf8(ws, reason):
    """5.5.1: the close reason is UTF-8; 8.1: invalid UTF-8 -> 1007.
    UNCLEAR IN RFC: some implementations answer 1002 here; this project requires 1007."""
    fail_after_valid(ws, build_frame(CLOSE, close_payload(1000) + reason), 1007)


@pytest.mark.parametrize("reason", ["r" * 123, "\u03ba\u1f79\u03c3\u03bc\u03b5" + "x" * 112],
                         ids=["123-ascii", "123-utf8"])
def test_7_close_max_reason(ws, reason):
    """5.5 + 5.5.1: code (2 bytes) + 123-byte reason = 125 bytes, the largest legal close
    frame; the code is echoed and the server closes TCP."""
    assert len(reason.encode()) == 123
    ws.send_close(1000, reason)
    ws.expect_close(1000, reply=False)


@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING], ids=["text", "binary", "ping"])
def test_7_frames_after_close_ignored(ws, opcode):
    """5.5.1: "The application MUST NOT send any more data frames after sending a Close
    frame"; the server has received the Close, answers it, and must not echo (or pong)
    frames that arrive after it. Then it closes TCP first (7.1.1)."""
    ws.send_raw(build_frame(CLOSE, close_payload(1000)) + build_frame(opcode, b"after close"))
    ws.expect_close(1000, reply=False)


def test_7_server_closes_tcp_first(ws):
    """7.1.1/5.5.1: after the close handshake the server closes the TCP connection, without
    the client doing anything (the client only reads and waits, bounded)."""
    ws.send_frame(TEXT, b"one")
    ws.expect_message(TEXT, b"one")
    ws.send_close(1000, "done")
    ws.expect_close(1000, reply=False)          # includes: recv() returns b'' within 5 s


# ===================================================================== 9. limits

SIZES = [64 * KiB, 256 * KiB, MiB, 4 * MiB]


@pytest.mark.parametrize("chunk", [None, 64 * KiB], ids=["one-frame", "64k-fragments"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s // KiB}k")
@pytest.mark.parametrize("opcode", DATA, ids=DATA_IDS)
def test_9_large_messages(ws, opcode, size, chunk):
    """5.2/5.4: large messages (64 KiB to 4 MiB, under the default limit) in one frame and
    in 64 KiB fragments are echoed byte-exact."""
    payload = payload_for(opcode, size) if opcode == TEXT else os.urandom(size)
    ws.send_raw(build_frame(opcode, payload) if chunk is None else fragments(opcode, payload, chunk))
    ws.expect_message(opcode, payload)


@pytest.mark.parametrize("parts", [[LIMIT], [400, 600], [1] * 10 + [LIMIT - 10]],
                         ids=["one-frame", "two-fragments", "eleven-fragments"])
def test_9_limit_exact_size_accepted(lws, parts):
    """10.4: the limit is inclusive: a message of exactly --max-size (1000) bytes is echoed."""
    payload = payload_for(TEXT, sum(parts))
    pos, frames = 0, []
    for i, n in enumerate(parts):
        frames.append(build_frame(TEXT if i == 0 else CONT, payload[pos:pos + n], fin=(i == len(parts) - 1)))
        pos += n
    lws.send_raw(b"".join(frames))
    lws.expect_message(TEXT, payload)


@pytest.mark.parametrize("length", [LIMIT + 1, 2000, 1 << 40], ids=["1001", "2000", "2^40"])
def test_9_oversized_frame_rejected_from_header(lws, length):
    """10.4/7.4.1: a frame announcing more than --max-size is refused with 1009 ("message that
    is too big for it to process") as soon as its HEADER arrives: only the header is sent,
    the payload never is (so the close cannot wait for it; no Close reply, we are mid-frame).
    UNCLEAR IN RFC: 10.4 only says implementations SHOULD limit sizes; the project requires
    this early 1009."""
    header, _ = build_header(BINARY, length)
    lws.send_raw(header)
    lws.expect_close(1009, reply=False)


def test_9_default_limit_from_header(ws):
    """10.4/7.4.1: the default server (64 MiB limit) refuses a frame announcing 2^40 bytes
    with 1009 from its header alone."""
    header, _ = build_header(BINARY, 1 << 40)
    ws.send_raw(header)
    ws.expect_close(1009, reply=False)


def test_9_fragmented_message_grows_past_limit(lws):
    """10.4/7.4.1: fragments of 400 bytes, never final: when the total passes 1000 (third
    fragment) the server closes with 1009 without waiting for the end of the message."""
    lws.send_frame(TEXT, b"x" * 400, fin=False)
    lws.send_frame(CONT, b"x" * 400, fin=False)
    lws.send_frame(CONT, b"x" * 400, fin=False)
    lws.expect_close(1009)


@pytest.mark.parametrize("server", ["default", "limited"])
def test_9_64bit_length_top_bit_set(request, server):
    """5.2: in the 64-bit length form "the most significant bit MUST be 0" -> 1002 (a framing
    error, not a size one), also on the server whose --max-size would give 1009.
    UNCLEAR IN RFC: 1009 could be argued for; the project requires 1002."""
    srv = request.getfixturevalue("echo_server" if server == "default" else "limited_server")
    conn = RawWS.connect(srv.host, srv.port, "/top-bit")
    try:
        header, _ = build_header(BINARY, (1 << 63) | 5, length_form=64)
        conn.send_raw(header + b"\x00" * 5)
        conn.expect_close(1002, reply=False)
    finally:
        conn.close_socket()


# ===================================================================== 10. auto-fragmentation

TEXT_64K = ("a\u00e9\u20ac\U0001f600" * (64 * KiB // 10 + 1)).encode()[:64 * KiB]
TEXT_64K = TEXT_64K[:len(TEXT_64K.decode("utf-8", "ignore").encode())]   # end on a whole character


@pytest.mark.parametrize("chunk", [1, 2, 4, 16, 256, 4096], ids=lambda c: f"{c}B")
@pytest.mark.parametrize("opcode", DATA, ids=DATA_IDS)
def test_10_64k_in_fragments(ws, opcode, chunk):
    """5.4: a ~64 KiB message in fragments of 1, 2, 4, 16, 256 and 4096 bytes is echoed
    byte-exact (text with 1-4 byte characters cut anywhere; 8.1 validates the whole message)."""
    payload = TEXT_64K if opcode == TEXT else payload_for(BINARY, 64 * KiB)
    ws.send_raw(fragments(opcode, payload, chunk))
    ws.expect_message(opcode, payload)

"""``python3 -m common explain``: frames and handshakes explained field by field.

The frames are those of RFC 6455 §5.7 as literal bytes, and frames built by
the library's encoder at every length boundary; each explanation is checked
for the values a learner reads in it, and each protocol error for the words
and section the library's receiver gives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tracemalloc
import zlib

import pytest

from common.__main__ import main
from common.explain import explain, explain_frames, explain_handshake, explain_wire_view, parse_hex
from common.frames import CloseCode, Opcode, encode_frame

try:                                    # tests/ as a package or as a plain directory
    from .stage_util import REPO, running_stage
except ImportError:
    from stage_util import REPO, running_stage

KEY = bytes.fromhex("37fa213d")


def frames(text: str, **options: object) -> str:
    return explain_frames(parse_hex(text), **options)  # type: ignore[arg-type]


def field(output: str, name: str) -> str:
    """The line of one header field, such as 'FIN' or 'opcode'."""
    return next(line for line in output.splitlines() if line.split()[:1] == [name])


# ------------------------------------------------------------------ RFC 6455 §5.7


def test_rfc_unmasked_hello() -> None:
    out = frames("81 05 48 65 6c 6c 6f")
    assert out.startswith("frame 1: final text frame, unmasked, 7 bytes, from the server")
    assert "bit 0      1" in field(out, "FIN") and "last frame of its message (§5.2)" in field(out, "FIN")
    assert "0001" in field(out, "opcode") and "text" in field(out, "opcode")
    assert "not masked" in field(out, "MASK")
    assert "5: the payload length itself (7 bits" in field(out, "length")
    assert "payload as text: 'Hello'" in out
    assert "=> message: text 'Hello' (5 bytes)" in out


def test_rfc_masked_hello() -> None:
    out = frames("81 85 37 fa 21 3d 7f 9f 4d 51 58")
    assert out.startswith("frame 1: final text frame, masked, 11 bytes, from the client")
    assert "bit 8      1" in field(out, "MASK") and "(§5.1, §5.3)" in field(out, "MASK")
    assert "bytes 2-5  37 fa 21 3d  masking key" in out
    assert "bytes 6-10  payload, 5 bytes, masked: 7f 9f 4d 51 58" in out
    assert "unmasked: 48 65 6c 6c 6f  (byte i XOR key[i mod 4], §5.3)" in out
    assert "=> message: text 'Hello' (5 bytes)" in out


def test_rfc_fragmented_hello() -> None:
    out = frames("01 03 48 65 6c 80 02 6c 6f")
    first, second = out.split("frame 2:")
    assert "non-final text frame" in first and "more fragments follow (§5.4)" in first
    assert "payload as text: 'Hel'" in first and "=> message" not in first
    assert " final continuation frame" in second and "payload as text: 'lo'" in second
    assert "=> message: text 'Hello' (5 bytes)" in second


def test_a_continuation_is_shown_as_its_message() -> None:
    out = frames("02 02 48 65 80 03 6c 6c 6f")  # binary "He" + "llo": bytes, though they decode
    assert out.count("2 bytes of binary data") == 1 and "3 bytes of binary data" in out
    assert "as text" not in out and "=> message: binary, 5 bytes" in out


@pytest.mark.parametrize("text, kind, masked", [
    ("89 05 48 65 6c 6c 6f", "ping", False),
    ("8a 85 37 fa 21 3d 7f 9f 4d 51 58", "pong", True),
])
def test_rfc_ping_and_masked_pong(text: str, kind: str, masked: bool) -> None:
    out = frames(text)
    assert out.startswith(f"frame 1: final {kind} frame, {'masked' if masked else 'unmasked'}")
    assert "payload as text: 'Hello'" in out
    assert f"=> a {kind}" in out


def test_rfc_256_byte_binary_header_uses_16_bits() -> None:
    out = frames("82 7e 01 00")
    assert "126: the length follows in the next 2 bytes (16 bits, §5.2)" in field(out, "length")
    assert "bytes 2-3  01 00  the length as a 16-bit unsigned integer, network order: 256" in out
    assert "truncated: the frame is 260 bytes, 4 are here: 256 missing (§5.2)" in out


def test_rfc_64_kib_binary_header_uses_64_bits() -> None:
    out = frames("82 7f 00 00 00 00 00 01 00 00")
    assert "127: the length follows in the next 8 bytes (64 bits, §5.2)" in field(out, "length")
    assert "bytes 2-9  00 00 00 00 00 01 00 00  the length as a 64-bit unsigned integer" in out
    assert "network order: 65536 (§5.2)" in out
    assert "65536 missing" in out


# ------------------------------------------------------------------ fields


@pytest.mark.parametrize("opcode, name", [
    (Opcode.CONT, "continuation"), (Opcode.TEXT, "text"), (Opcode.BINARY, "binary"),
    (Opcode.CLOSE, "close"), (Opcode.PING, "ping"), (Opcode.PONG, "pong"),
])
def test_every_opcode_is_named(opcode: int, name: str) -> None:
    out = explain_frames(encode_frame(opcode, b""))
    assert f"{opcode:04b}  {opcode:#x} = {name}" in field(out, "opcode")


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_fail_the_connection(opcode: int) -> None:
    out = explain_frames(bytes((0x80 | opcode, 0)))
    kind = "control" if opcode >= 8 else "data"
    assert f"reserved opcode {opcode:#x}" in out.splitlines()[0]
    assert f"error: reserved {kind} opcode {opcode:#x} (§5.2)" in out
    assert "close code 1002 (protocol error" in out


@pytest.mark.parametrize("length, bits", [
    (0, 7), (1, 7), (125, 7), (126, 16), (127, 16), (65535, 16), (65536, 64), (65537, 64),
])
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_the_three_length_encodings_at_their_boundaries(length: int, bits: int, masked: bool) -> None:
    data = encode_frame(Opcode.BINARY, bytes(length), mask=masked, mask_key=KEY)
    out = explain_frames(data)
    field_value = {7: length, 16: 126, 64: 127}[bits]
    assert field(out, "length").split()[3] == f"{field_value:07b}"
    if bits == 7:
        assert f"{length}: the payload length itself (7 bits: 0-125" in out
    else:
        assert f"the length as a {bits}-bit unsigned integer, network order: {length} (§5.2)" in out
    header = 2 + {7: 0, 16: 2, 64: 8}[bits] + (4 if masked else 0)
    assert f"{len(data)} bytes, from the {'client' if masked else 'server'}" in out
    if length:
        assert f"bytes {header}-{header + length - 1}  payload, {length} bytes" in out
    assert f"=> message: binary, {length} bytes" in out


def test_a_long_payload_is_shown_by_its_ends() -> None:
    out = explain_frames(encode_frame(Opcode.BINARY, bytes(range(256)) * 4))
    payload_line = next(line for line in out.splitlines() if "payload, 1024 bytes" in line)
    assert payload_line.endswith("00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19"
                                 " 1a 1b 1c 1d 1e 1f ... f8 f9 fa fb fc fd fe ff")


def test_several_frames_in_a_row_are_numbered() -> None:
    data = encode_frame(Opcode.TEXT, b"a") + encode_frame(Opcode.PING, b"") + encode_frame(Opcode.BINARY, b"bc")
    out = explain_frames(data)
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("frame")] == [
        "frame 1", "frame 2", "frame 3"]


# ------------------------------------------------------------------ close frames


@pytest.mark.parametrize("code, meaning", [
    (1000, "normal closure"), (1001, "going away"), (1002, "protocol error"), (1003, "unsupported data"),
    (1007, "invalid data"), (1008, "policy violation"), (1009, "message too big"),
    (1010, "mandatory extension"), (1011, "internal error"), (1012, "service restart"),
    (1013, "try again later"), (1014, "bad gateway"),
    (3000, "registered for libraries and frameworks"), (3999, "registered for libraries and frameworks"),
    (4000, "private use"), (4999, "private use"),
])
def test_close_codes_and_reasons_are_explained(code: int, meaning: str) -> None:
    out = explain_frames(encode_frame(Opcode.CLOSE, code.to_bytes(2, "big") + "au revoir, ça va".encode()))
    assert f"payload: code {code} ({meaning}" in out
    assert "reason 'au revoir, ça va' (§5.5.1, §7.4)" in out
    assert f"=> the peer's close: {code} " in out


def test_an_empty_close_means_no_status_code() -> None:
    out = frames("88 00")
    assert "no payload" in out
    assert "=> the peer's close: 1005 (no status rcvd)" in out


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_codes_that_may_not_be_sent_fail_the_connection(code: int) -> None:
    out = explain_frames(encode_frame(Opcode.CLOSE, code.to_bytes(2, "big")))
    assert f"error: invalid close code {code} (§7.4)" in out
    assert "close code 1002" in out


def test_a_one_byte_close_payload_and_a_reason_that_is_not_utf8() -> None:
    one = frames("88 01 03")
    assert "one byte: too short for a status code (§5.5.1)" in one
    assert "error: close frame with a 1-byte payload (§5.5.1)" in one
    bad = frames("88 04 03 e8 ff fe")
    assert "error: close reason is not valid UTF-8: invalid start byte (§5.5.1)" in bad
    assert "close code 1007 (invalid data" in bad


# ------------------------------------------------------------------ compression


def deflated(text: str) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(text.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def test_a_compressed_message_is_inflated_with_deflate() -> None:
    out = frames("c1 07 f2 48 cd c9 c9 07 00", deflate=True)  # RFC 7692 §7.2.3.1: "Hello"
    assert "compressed message (permessage-deflate, RFC 7692 §6)" in field(out, "RSV1")
    assert "payload, 7 bytes: f2 48 cd c9 c9 07 00" in out
    assert "inflated (00 00 ff ff appended, then raw DEFLATE) as text (RFC 7692 §7.2.2): 'Hello'" in out
    assert "=> message: text 'Hello' (5 bytes)" in out


def test_a_compressed_masked_fragmented_message() -> None:
    body = deflated("permessage-deflate " * 20)
    data = (encode_frame(Opcode.TEXT, body[:10], fin=False, rsv1=True, mask=True, mask_key=KEY)
            + encode_frame(Opcode.CONT, body[10:], mask=True, mask_key=KEY))
    out = explain_frames(data, deflate=True)
    assert out.count("from the client") == 2
    assert "=> message: text 'permessage-deflate permessage-deflate" in out
    assert "(380 bytes)" in out


def test_rsv1_without_deflate_is_the_librarys_error() -> None:
    out = frames("c1 07 f2 48 cd c9 c9 07 00")
    assert "set, but no extension was agreed (--deflate if permessage-deflate was)" in field(out, "RSV1")
    assert "error: reserved bits set without a negotiated extension (§5.2)" in out


@pytest.mark.parametrize("b0", [0xA1, 0x91], ids=["RSV2", "RSV3"])
def test_rsv2_and_rsv3_fail_even_with_deflate(b0: int) -> None:
    out = explain_frames(bytes((b0, 0)), deflate=True)
    assert "error: reserved bits set without a negotiated extension (§5.2)" in out


def test_a_compressed_message_without_the_ones_before_says_what_to_give() -> None:
    """The second of two compressed messages, given alone, refers back to the first (context takeover):
    the error says so and what to give; both in one call are inflated."""
    compressor = zlib.compressobj(wbits=-15)
    first, second = (compressor.compress(text.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
                     for text in ("hello world " * 10, "hello world " * 10 + "!"))
    frame1, frame2 = (encode_frame(Opcode.TEXT, data[:-4], rsv1=True) for data in (first, second))
    alone = explain_frames(frame2, deflate=True)
    assert "invalid distance too far back" in alone
    assert ("this compressed message refers back to the messages sent before it in the same direction"
            " (context takeover, RFC 7692 §7.1.1, §7.2.3.2)") in alone
    assert ("give all the messages of that direction, from its first one after the handshake, in order,"
            " in one call (with --deflate)") in alone
    both = explain_frames(frame1 + frame2, deflate=True)
    assert "error" not in both and both.count("=> message: text 'hello world hello world") == 2


def test_hex_of_both_directions_says_one_direction_per_call() -> None:
    """A client's frame then the server's answer, as hex in one call: the error says why, and what to give."""
    out = frames("81 85 37 fa 21 3d 7f 9f 4d 51 58 81 05 48 65 6c 6c 6f")
    assert "error: client frames must be masked (§5.1)" in out
    assert ("hex is read as the frames of one direction: give the other direction's frames in another call,"
            " or give the -vv wire-view lines as they are, < and > included, to explain both") in out


# ------------------------------------------------------------------ wire-view lines (-vv, pasted as they are)


def masked(opcode: int, payload: bytes, **options: object) -> bytes:
    return encode_frame(opcode, payload, mask=True, mask_key=KEY, **options)  # type: ignore[arg-type]


def line(mark_or_kind: str, rest: str, peer: str = "127.0.0.1:57324", time: str = "07:28:18,754") -> str:
    """One line as the wire view logs it: the time, the peer, then a mark line or a frame's bytes."""
    if mark_or_kind in ("frame", "header"):
        return f"2026-12-07 {time} {peer}     {mark_or_kind} {rest}"
    return f"2026-12-07 {time} {peer} {mark_or_kind} {rest}"


def framed(mark: str, frame: bytes, peer: str = "127.0.0.1:57324") -> list[str]:
    """The two lines of one frame in a -vv log: its < or > line, then its bytes."""
    return [line(mark, f"TEXT '...' [{len(frame)} bytes]", peer), line("frame", frame.hex(" "), peer)]


def headings(out: str) -> list[str]:
    return [text for text in out.splitlines() if text.startswith("frame ")]


SERVER_HANDSHAKE = [
    line("<", "GET / HTTP/1.1"), line("", "Host: 127.0.0.1:5678").replace("  ", "     ", 1),
    line(">", "HTTP/1.1 101 Switching Protocols"),
    "2026-12-07 07:28:18,754 127.0.0.1:57324     Sec-WebSocket-Extensions: permessage-deflate",
    line("=", "connection is OPEN"), "2026-12-07 07:28:18,754 127.0.0.1:57324: connection open on /",
]


def test_wire_view_lines_of_both_directions_are_explained_each_from_its_sender() -> None:
    """A server's -vv lines pasted as they are: the client's masked frame (<) and the server's answer (>)
    in one call, each labelled with its sender and checked against that sender's masking; the stage's own
    console lines between them are passed over."""
    text = "\n".join([
        "listening on ws://127.0.0.1:5678/",
        *framed("<", masked(Opcode.TEXT, b"GET_TIME")),
        "127.0.0.1:57324 asked GET_TIME; answer: '2026-12-07T07:28:18.754Z'",
        *framed(">", encode_frame(Opcode.TEXT, b"2026-12-07T07:28:18.754Z")),
    ])
    out = explain(text)
    assert headings(out) == [
        "frame 1 (line 3, 127.0.0.1:57324): final text frame, masked, 14 bytes, from the client",
        "frame 2 (line 6, 127.0.0.1:57324): final text frame, unmasked, 26 bytes, from the server",
    ]
    assert "=> message: text 'GET_TIME' (8 bytes)" in out
    assert "=> message: text '2026-12-07T07:28:18.754Z' (24 bytes)" in out
    assert "error" not in out


def test_the_side_that_wrote_the_log_decides_what_less_than_means() -> None:
    """The same frames as a client logs them (its own frame >, the server's <): the same senders.
    The handshake's lines say who wrote the log; without them, the first frame's MASK bit."""
    client_log = [line(">", "GET / HTTP/1.1"), line("<", "HTTP/1.1 101 Switching Protocols"),
                  *framed(">", masked(Opcode.TEXT, b"GET_TIME")), *framed("<", encode_frame(Opcode.TEXT, b"now"))]
    for text in ("\n".join(client_log), "\n".join(client_log[2:])):
        senders = [heading.rsplit(" ", 1)[1] for heading in headings(explain(text))]
        assert senders == ["client", "server"], text


def test_a_frame_that_breaks_its_senders_masking_is_still_an_error() -> None:
    """Directions come from < and >, not from the MASK bit: the server's log shows a < frame that is not
    masked after the handshake said the server wrote the log: the client broke §5.1."""
    text = "\n".join([line("<", "GET / HTTP/1.1"), line(">", "HTTP/1.1 101 Switching Protocols"),
                      *framed("<", encode_frame(Opcode.TEXT, b"hi"))])
    out = explain(text)
    assert "from the client" in out and "error: client frames must be masked (§5.1)" in out
    assert "the connection is failed (§7.1.7): its later frames are not explained" in out


def test_logged_by_says_who_wrote_lines_without_a_handshake(capsys: pytest.CaptureFixture[str]) -> None:
    """--logged-by server: the < frame is the client's, whatever its MASK bit says."""
    lines = framed("<", encode_frame(Opcode.TEXT, b"hi"))
    assert main(["explain", "--logged-by", "server", *lines]) == 0
    out = capsys.readouterr().out
    assert "from the client" in out and "error: client frames must be masked (§5.1)" in out
    assert main(["explain", *lines]) == 0  # without it, the MASK bit says: the server sent it, unmasked
    assert "error" not in capsys.readouterr().out


def test_each_direction_keeps_its_own_decompression_context() -> None:
    """Compressed messages both ways, interleaved: each direction inflates with its own context, so the
    second message of each, which refers back to the first of its direction, is inflated too. The 101
    response in the lines says permessage-deflate was agreed: no --deflate needed."""
    client, server = zlib.compressobj(wbits=-15), zlib.compressobj(wbits=-15)

    def deflate(compressor, text: str) -> bytes:  # type: ignore[no-untyped-def]
        return (compressor.compress(text.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]

    lines = list(SERVER_HANDSHAKE)
    for n in range(2):
        lines += framed("<", masked(Opcode.TEXT, deflate(client, "ask " * 30 + str(n)), rsv1=True))
        lines += framed(">", encode_frame(Opcode.TEXT, deflate(server, "answer " * 30 + str(n)), rsv1=True))
    out = explain("\n".join(lines))
    assert "error" not in out
    for n in range(2):
        assert f"=> message: text '{('ask ' * 30)[:64]}...' ({4 * 30 + 1} bytes)" in out
        assert f"=> message: text '{('answer ' * 30)[:64]}...' ({7 * 30 + 1} bytes)" in out
    without_handshake = explain("\n".join(lines[len(SERVER_HANDSHAKE):]))
    assert "reserved bits set without a negotiated extension" in without_handshake  # --deflate then, as for hex
    assert "error" not in explain("\n".join(lines[len(SERVER_HANDSHAKE):]), deflate=True)


def test_a_frame_logged_by_its_header_alone_is_named_in_one_line() -> None:
    """-vv logs a frame past 125 bytes of payload by its header: one line says so, the next frames go on."""
    header = encode_frame(Opcode.BINARY, bytes(200))[:4]
    lines = [*SERVER_HANDSHAKE[:3], line(">", "BINARY 00 00 ... [200 bytes]"),
             line("header", f"{header.hex(' ')} (then 200 payload bytes)"),
             *framed(">", encode_frame(Opcode.TEXT, b"after"))]
    out = explain("\n".join(lines))
    assert headings(out) == [
        "frame 1 (line 5, 127.0.0.1:57324): final binary frame, unmasked, from the server, logged by its header"
        " alone, 200 payload bytes not in the log (-vv shows a frame's bytes up to 125 bytes of payload): not"
        " explained in full",
        "frame 2 (line 7, 127.0.0.1:57324): final text frame, unmasked, 7 bytes, from the server",
    ]
    assert "=> message: text 'after' (5 bytes)" in out


def test_compressed_wire_view_lines_from_the_middle_say_what_to_give() -> None:
    """Lines that start after a compressed message the next one refers back to: the error says that the
    message refers back (context takeover) and to give the lines from the handshake on."""
    compressor = zlib.compressobj(wbits=-15)
    first, second = ((compressor.compress(text.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
                     for text in ("GET_TIME " * 20, "GET_TIME " * 20 + "!"))
    lines = [line("<", "TEXT 'GET_TIME GET_TIME ...' [180 bytes, compressed to 9 bytes]"),
             line("frame", masked(Opcode.TEXT, first, rsv1=True).hex(" ")),
             line("<", "TEXT 'GET_TIME GET_TIME ...' [181 bytes, compressed to 5 bytes]"),
             line("frame", masked(Opcode.TEXT, second, rsv1=True).hex(" "))]
    whole = explain("\n".join(lines))  # "compressed to" says permessage-deflate was agreed
    assert "error" not in whole and "(181 bytes)" in whole
    out = explain("\n".join(lines[2:]))
    assert "invalid distance too far back" in out
    assert "refers back to the messages sent before it in the same direction (context takeover" in out
    assert ("give all the lines of this connection from its handshake on, in order (the client's messages from"
            " its first one)") in out


def test_bare_frame_lines_are_read_by_their_mask_bit() -> None:
    """`frame ...` lines without their < or > lines (or with the time cut off): each frame's MASK bit
    says who sent it, as for hex; --from says it for all of them."""
    text = "\n".join(["    frame " + masked(Opcode.TEXT, b"GET_TIME").hex(" "),
                      "frame " + encode_frame(Opcode.TEXT, b"now").hex(" ")])
    assert [heading.rsplit(" ", 1)[1] for heading in headings(explain(text))] == ["client", "server"]
    assert "error: client frames must be masked" in explain(text, side="client")


def test_wire_view_lines_without_frame_bytes() -> None:
    """-v lines (no bytes): nothing to explain, and the line says that -vv logs them."""
    out = explain("2026-12-07 07:28:18,754 127.0.0.1:57324 < TEXT 'GET_TIME' [8 bytes]\n")
    assert out == ("nothing to explain: no frame's bytes in these lines (a 'frame ...' line, which the wire view"
                   " writes with -vv)\n")


def test_a_frame_line_with_bad_hex_is_one_line_naming_it() -> None:
    run = subprocess.run([sys.executable, "-m", "common", "explain", "< TEXT 'x' [1 bytes]", "frame 81 01 zz"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr == ("error: line 2: not hex: 'z' (frames are given as hex bytes, such as"
                          " 81 05 48 65 6c 6c 6f)\n")


def test_text_that_is_neither_hex_nor_a_handshake_nor_wire_view_lines_is_one_line() -> None:
    run = subprocess.run([sys.executable, "-m", "common", "explain"], input="hello there\nhow are you\n",
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr == ("error: nothing to explain: no hex (such as 81 05 48 65 6c 6c 6f), no handshake (GET ... or"
                          " HTTP/1.1 ...) and no wire-view line (such as '< TEXT ...' or 'frame 81 05 ...')\n")


def test_a_line_beyond_the_limit_is_one_line(tmp_path) -> None:
    """Lines are read one at a time, none held past HANDSHAKE_LIMIT characters: one line says so."""
    from common.explain import HANDSHAKE_LIMIT
    path = tmp_path / "huge.log"
    path.write_text("< TEXT 'x' [1 bytes]\n" + "z" * (HANDSHAKE_LIMIT + 10))
    run = subprocess.run([sys.executable, "-m", "common", "explain", "--file", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr == (f"error: a line of more than {HANDSHAKE_LIMIT:,} characters: not a wire-view line"
                          " (a frame's line holds at most 131 bytes of hex)\n")


def test_explain_wire_view_is_what_explain_does_with_lines() -> None:
    text = "\n".join(framed("<", masked(Opcode.TEXT, b"hi")))
    assert explain_wire_view(text) == explain(text)


def test_the_tours_session_explained_from_either_side_log(tmp_path) -> None:
    """The tour: test2 with -vv, the CLI client with -vv; GET_TIME, a long compressible command twice (the
    second refers back to the first), one past 125 bytes once compressed. Each side's whole terminal,
    pasted as it is into one call, is explained frame by frame with the right senders and no error; the
    long one is named by its header."""
    commands = ["GET_TIME", "x" * 200, "x" * 200, os.urandom(150).hex()]
    with running_stage("test2", "-vv", tmp_path=tmp_path) as stage:
        client = subprocess.run([sys.executable, "-m", "common", "client", "-vv", stage.url()], cwd=REPO,
                                input="".join(f"{command}\n" for command in commands),
                                capture_output=True, text=True, timeout=30)
        assert client.returncode == 0, client.stderr
        stage.wait_for_output("connection is CLOSED")
        assert stage.stop(signal.SIGINT) == 0
    for log in (stage.output(), client.stderr):
        out = explain(log)
        assert "error" not in out, out
        senders = [heading.split(", ")[-1] for heading in headings(out) if "header alone" not in heading]
        # 4 commands (one by its header) and a close; 4 answers and a close; in the order each side saw them
        assert sorted(senders) == ["from the client"] * 4 + ["from the server"] * 5, out
        assert out.count("=> message: text 'GET_TIME' (8 bytes)") == 1
        assert out.count(f"=> message: text '{'x' * 64}...' (200 bytes)") == 2
        assert out.count("logged by its header alone") == 1
        assert out.count("=> the peer's close: 1000 (normal closure)") == 2


# ------------------------------------------------------------------ protocol errors


@pytest.mark.parametrize("text, side, error", [
    ("89 7e 00 7e", None, "control frame payload over 125 bytes (§5.5)"),
    ("81 05 48 65 6c 6c 6f", "client", "client frames must be masked (§5.1)"),
    ("81 85 37 fa 21 3d 7f 9f 4d 51 58", "server", "server frames must not be masked (§5.1)"),
    ("09 00", None, "fragmented control frame (§5.5)"),
    ("80 01 41", None, "continuation frame with no message to continue (§5.4)"),
    ("01 01 41 81 01 42", None, "new data frame inside a fragmented message (§5.4)"),
    ("81 02 c3 28", None, "invalid UTF-8 in text message: invalid continuation byte (§8.1)"),
    ("82 7f 80 00 00 00 00 00 00 00", None, "64-bit payload length with the top bit set (§5.2)"),
], ids=["long control", "unmasked client", "masked server", "fragmented control", "lone continuation",
        "data inside fragments", "bad utf-8", "64-bit top bit"])
def test_protocol_errors_are_the_receivers(text: str, side: str | None, error: str) -> None:
    out = frames(text, side=side)
    assert f"  error: {error}\n" in out
    code = 1007 if "UTF-8" in error else 1002
    assert f"the receiver fails the connection with close code {code}" in out


def test_invalid_utf8_fails_before_the_frame_is_complete() -> None:
    out = frames("81 7e 01 00 c3 28")  # 256 bytes announced, the bad sequence comes first
    assert "error: invalid UTF-8 in text message: invalid continuation byte (§8.1)" in out
    assert "truncated" not in out


def test_bytes_after_an_error_are_not_read() -> None:
    out = frames("80 01 41 81 05 48 65 6c 6c 6f")
    assert "frame 2" not in out
    assert "the other 7 byte(s) are not read: the connection is failed (§7.1.7)" in out


def test_fragments_that_never_end() -> None:
    out = frames("01 03 48 65 6c 00 01 6c")
    assert out.rstrip().endswith("the bytes end inside a fragmented message: its last frame (FIN 1) has not come (§5.4)")


# ------------------------------------------------------------------ truncated input


@pytest.mark.parametrize("text, header_needs, given", [
    ("81", 2, 1), ("82 7e 01", 4, 3), ("82 7f 00 00 00", 10, 5), ("81 85 37 fa", 6, 4),
])
def test_a_truncated_header_says_how_many_bytes_are_missing(text: str, header_needs: int, given: int) -> None:
    out = frames(text)
    assert out.strip() == (f"frame 1: truncated header: {given} byte(s) here, the header needs {header_needs}:"
                           f" {header_needs - given} missing (§5.2)")


def test_a_truncated_payload_says_how_many_bytes_are_missing() -> None:
    out = frames("81 85 37 fa 21 3d 7f 9f")
    assert "bytes 6-10  payload, 5 bytes, masked, 2 of them here: 7f 9f" in out
    assert out.rstrip().endswith("truncated: the frame is 11 bytes, 8 are here: 3 missing (§5.2)")


def test_a_truncated_second_frame() -> None:
    out = frames("81 05 48 65 6c 6c 6f 82")
    assert "=> message: text 'Hello'" in out
    assert "frame 2: truncated header: 1 byte(s) here, the header needs 2: 1 missing (§5.2)" in out


# ------------------------------------------------------------------ hex input


def test_hex_ignores_spaces_newlines_and_0x() -> None:
    assert parse_hex("81 05\n48656c\t6c 0x6f") == bytes.fromhex("810548656c6c6f")


@pytest.mark.parametrize("text, error", [
    ("81 0g", "not hex: 'g'"), ("81 5", r"an odd number of hex digits \(3\)"),
])
def test_bad_hex_is_refused_clearly(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_hex(text)


def test_nothing_to_explain() -> None:
    assert explain("  \n") == "nothing to explain: no bytes given\n"


# ------------------------------------------------------------------ handshakes

RFC_REQUEST = """GET /chat HTTP/1.1
Host: server.example.com
Upgrade: websocket
Connection: Upgrade
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
Origin: http://example.com
Sec-WebSocket-Protocol: chat, superchat
Sec-WebSocket-Version: 13
"""

RFC_RESPONSE = """HTTP/1.1 101 Switching Protocols
Upgrade: websocket
Connection: Upgrade
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
Sec-WebSocket-Protocol: chat
"""


def test_the_accept_key_walkthrough_matches_rfc_section_1_3() -> None:
    out = explain(RFC_REQUEST)
    assert "  1. the key, as text:         dGhlIHNhbXBsZSBub25jZQ==" in out
    assert "  2. append the GUID:          dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11" in out
    assert ("  3. SHA-1 of those bytes:     b3 7a 4f 2c c0 62 4f 16 90 f6 46 06 cf 38 59 45 b2 be c4 ea"
            in out)
    assert "  4. base64 of the 20 bytes:   s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in out


def test_a_request_is_explained_header_by_header_and_accepted() -> None:
    out = explain(RFC_REQUEST.replace("\n", "\r\n"))
    assert out.startswith("an opening handshake request (RFC 6455 §4.1)")
    for header in ("Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Origin", "Sec-WebSocket-Protocol",
                   "Sec-WebSocket-Version"):
        line = next(i for i, text in enumerate(out.splitlines()) if text.startswith(f"  {header}: "))
        assert "§" in out.splitlines()[line + 1]
    assert "accepted: the server answers 101 Switching Protocols with" in out
    assert "    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in out


@pytest.mark.parametrize("change, status, words", [
    (("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"), "426 Upgrade Required", "version 13"),
    (("GET", "POST"), "405 Method Not Allowed", "a WebSocket handshake uses GET"),
    (("Upgrade: websocket", "Upgrade: h2c"), "426 Upgrade Required", "Upgrade: websocket required"),
    (("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), "400 Bad Request", "must encode 16 bytes"),
], ids=["version", "method", "upgrade", "short key"])
def test_a_refused_request_names_the_status(change: tuple[str, str], status: str, words: str) -> None:
    out = explain(RFC_REQUEST.replace(*change))
    assert words in out
    assert f"the server answers {status} and no WebSocket opens" in out


def with_extensions(value: str) -> str:
    return RFC_REQUEST + f"Sec-WebSocket-Extensions: {value}\n"


def test_a_deflate_offer_with_bad_parameters_is_declined_and_the_next_one_taken() -> None:
    """RFC 7692 §7: the server declines such an offer and tries the next; the request is accepted."""
    out = explain(with_extensions("permessage-deflate; foo, permessage-deflate; server_no_context_takeover"))
    assert ("  permessage-deflate offer 1 (permessage-deflate; foo): declined, unknown parameter 'foo'; the server"
            " tries the next offer (RFC 7692 §7)") in out
    assert "  permessage-deflate offer 2 (permessage-deflate; server_no_context_takeover): accepted" in out
    assert "accepted: the server answers 101 Switching Protocols with" in out
    assert "    Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover" in out


def test_no_acceptable_deflate_offer_opens_without_compression() -> None:
    out = explain(with_extensions("permessage-deflate; server_max_window_bits=07, permessage-deflate; a; a"))
    assert "offer 1 (permessage-deflate; server_max_window_bits=07): declined, server_max_window_bits='07'" in out
    assert "offer 2 (permessage-deflate; a; a): declined, unknown parameter 'a'" in out
    assert "no permessage-deflate offer is acceptable: the connection opens without compression (RFC 7692 §7)" in out
    assert "accepted: the server answers 101 Switching Protocols with" in out
    assert "Sec-WebSocket-Extensions: permessage" not in out.split("accepted: the server answers 101")[1]


def test_an_extensions_header_that_breaks_the_grammar_is_refused() -> None:
    """RFC 6455 §9.1: a header that cannot be read as a list of extensions still gets 400."""
    out = explain(with_extensions("permessage-deflate; foo, permessage-deflate;"))
    assert "refused: invalid Sec-WebSocket-Extensions header" in out
    assert "the server answers 400 Bad Request and no WebSocket opens" in out


def test_a_response_is_checked_against_the_key() -> None:
    out = explain_handshake(RFC_RESPONSE, key="dGhlIHNhbXBsZSBub25jZQ==")
    assert "101 Switching Protocols: from the next byte on, both sides speak WebSocket frames" in out
    assert "s3pPLMBiTxaQ9kYGzzhZRbK+xOo= matches: the client goes on" in out
    wrong = explain_handshake(RFC_RESPONSE, key="AQIDBAUGBwgJCgsMDQ4PEA==")
    assert "does NOT match: the client must fail the connection (§4.1)" in wrong
    assert "give the request's key (--key)" in explain_handshake(RFC_RESPONSE)


BROWSER_RULE = ('    a browser fails the connection on any status but 101, redirects included (WHATWG WebSockets Standard,'
                ' "establish a WebSocket connection")')


@pytest.mark.parametrize("status, rfc_rule", [
    ("403 Forbidden", "RFC 6455 §4.1: the client handles it as any HTTP answer"),
    ("302 Found\nLocation: ws://example.com/", "RFC 6455 §4.1 lets a client follow this redirect (Location), or not"),
    ("401 Unauthorized\nWWW-Authenticate: Basic", "RFC 6455 §4.1 lets a client authenticate (WWW-Authenticate) and"
                                                  " try again"),
], ids=["403", "302", "401"])
def test_a_refusal_response(status: str, rfc_rule: str) -> None:
    """RFC 6455 §4.1 lets a client follow a redirect or authenticate; failing on anything but 101 is the
    WHATWG standard's rule, for browsers, and each is cited as what it is."""
    out = explain(f"HTTP/1.1 {status}\nContent-Length: 0\n")
    assert f"    not 101: no WebSocket opens on this answer; {rfc_rule}\n{BROWSER_RULE}\n" in out
    assert "fails the connection (§4.1)" not in out


def test_a_malformed_request_line() -> None:
    assert "not a valid HTTP/1.1 request" in explain("GET /chat HTTP/1.0\nHost: x\n")


# ------------------------------------------------------------------ the command


def test_command_reads_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "81", "05", "48656c6c6f"]) == 0
    assert "=> message: text 'Hello'" in capsys.readouterr().out


def test_command_reads_a_file_and_options(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "frame.hex").write_text("81 05 48 65\n6c 6c 6f\n")
    assert main(["explain", "--from", "client", "--file", str(tmp_path / "frame.hex")]) == 0
    assert "error: client frames must be masked (§5.1)" in capsys.readouterr().out


def test_command_reads_standard_input_and_refuses_bad_hex() -> None:
    ok = subprocess.run([sys.executable, "-m", "common", "explain", "--key", "dGhlIHNhbXBsZSBub25jZQ=="],
                        input=RFC_RESPONSE, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "matches: the client goes on" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "common", "explain", "81", "zz"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("error: not hex: 'z' (frames are given as hex bytes, such as 81 05 48 65 6c 6c 6f)")
    assert "Traceback" not in bad.stderr


def test_command_refuses_a_missing_file(tmp_path) -> None:
    assert main(["explain", "--file", str(tmp_path / "nope.txt")]) == 1


def test_close_code_enum_and_table_agree() -> None:
    from common.explain import CLOSE_CODES
    sendable = {code for code in CloseCode if code not in (1005, 1006, 1015)}
    assert set(CLOSE_CODES) == sendable


# ------------------------------------------------------------------ input of any size


class _Sink:
    """Standard output that counts what it is given and keeps none of it."""

    def __init__(self) -> None:
        self.lines = 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        return len(text)

    def flush(self) -> None:
        pass


def _peak_explaining(path, frames: int, frame: str = "8a00") -> tuple[int, int]:
    """Peak memory (tracemalloc) of ``explain --from server --file path``, and the lines it printed."""
    path.write_text(frame * frames)  # empty pongs
    sink = _Sink()
    tracemalloc.start()
    try:
        with contextlib.redirect_stdout(sink):  # type: ignore[type-var]
            assert main(["explain", "--from", "server", "--file", str(path)]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, sink.lines


def test_memory_does_not_grow_with_the_number_of_frames(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command explains each frame as its hex is read and prints it at once: 4 times as many frames
    cost no more memory, where holding the explanation until the end (or copying the rest of the input
    for each frame) costs megabytes more."""
    import common.explain
    monkeypatch.setattr(common.explain, "PIECE", 1024, raising=False)  # small pieces: many of them, quickly
    frames = 2500  # 10 KB of hex
    _peak_explaining(tmp_path / "warm-up.hex", 100)  # what the first run alone allocates (caches)
    small, small_lines = _peak_explaining(tmp_path / "small.hex", frames)
    large, large_lines = _peak_explaining(tmp_path / "large.hex", 4 * frames)
    assert large_lines == 4 * small_lines == 4 * 12 * frames  # every frame explained, 12 lines each
    assert large < small + 256 * 1024, f"{frames} frames: peak {small} bytes; {4 * frames} frames: {large} bytes"


def test_memory_does_not_grow_with_the_number_of_wire_view_lines(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for wire-view lines: each frame is explained as its line is read, and a connection's
    state goes when its "connection is CLOSED" line comes."""
    import common.explain
    monkeypatch.setattr(common.explain, "PIECE", 1024, raising=False)
    pong = "2026-12-07 07:28:18,754 127.0.0.1:{port} > PONG [0 bytes]\n" \
           "2026-12-07 07:28:18,754 127.0.0.1:{port}     frame 8a 00\n"
    frame = "".join(pong.format(port=port) for port in range(40000, 40010))
    frame += "2026-12-07 07:28:18,754 127.0.0.1:40000 = connection is CLOSED: ...\n"
    frames = 250
    _peak_explaining(tmp_path / "warm-up.log", 10, frame)
    small, small_lines = _peak_explaining(tmp_path / "small.log", frames, frame)
    large, large_lines = _peak_explaining(tmp_path / "large.log", 4 * frames, frame)
    assert large_lines == 4 * small_lines == 4 * 12 * 10 * frames
    assert large < small + 256 * 1024, f"{frames} lines: peak {small} bytes; {4 * frames} lines: {large} bytes"


WIRE_LINES = "\n".join([
    "listening on ws://127.0.0.1:5678/", *SERVER_HANDSHAKE,
    *framed("<", masked(Opcode.TEXT, b"GET_TIME")), *framed(">", bytes.fromhex("c1 07 f2 48 cd c9 c9 07 00")),
    line(">", "BINARY [200 bytes]"), line("header", "82 7e 00 c8 (then 200 payload bytes)"),
    *framed("<", masked(Opcode.CLOSE, b"\x03\xe8")), line("=", "connection is CLOSED: ..."), "server stopped",
])

STREAMED = [
    WIRE_LINES,

    "0x81 0x05 0x48 0x65 0x6c 0x6c 0x6f",                            # 0x prefixes
    "0x8a0x00 8a 000x8a 00 8a0000",                                  # 0x after digits, a 0 before one
    "81 85 37 fa 21 3d\n7f 9f 4d 51 58\n  8a00 8a00 01 03 48 65 6c 80 02 6c 6f",  # masked, then unmasked: an error
    "c1 07 f2 48 cd c9 c9 07 00 0100 80",                           # compressed, a fragment, a continuation
    "88 02 03 e8 89 00",                                             # a close, then bytes not read
    "81 7e 01",                                                      # a truncated header
    RFC_REQUEST,
    RFC_RESPONSE,
    "\n  \n" + RFC_REQUEST.replace("GET /chat", "GET /" + "c" * 300),  # a long request line
    "",
]


@pytest.mark.parametrize("text", STREAMED)
@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_the_input_may_come_in_pieces_of_any_size(text: str, size: int) -> None:
    """explain_stream (what the command reads a file with) says what explain says of the whole text, wherever
    the pieces end: between a byte's two digits, inside a 0x, inside the request line."""
    from common.explain import explain_stream
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    assert "".join(explain_stream(pieces, deflate="c1" in text)) == explain(text, deflate="c1" in text)


@pytest.mark.parametrize("text, error", [
    ("81 0g", "not hex: 'g'"), ("81 5", r"an odd number of hex digits \(3\)"), ("0x8 0x 1", "not hex: 'x'"),
])
@pytest.mark.parametrize("size", [1, 2, 3])
def test_bad_hex_in_pieces_is_refused_as_a_whole(text: str, error: str, size: int) -> None:
    from common.explain import hex_chunks
    with pytest.raises(ValueError, match=error):
        parse_hex(text)
    with pytest.raises(ValueError, match=error):
        list(hex_chunks(text[i : i + size] for i in range(0, len(text), size)))


def test_command_explains_the_frames_before_bad_hex_then_says_where_it_stopped(tmp_path) -> None:
    """Bad hex after a long capture: the frames read before it are explained, then the error, in one line."""
    path = tmp_path / "capture.hex"
    path.write_text("8a00 " * 40_000 + "zz")  # 200 KB: the error is far past the first pieces read
    run = subprocess.run([sys.executable, "-m", "common", "explain", "--file", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stdout.startswith("frame 1: final pong frame, unmasked, 2 bytes, from the server\n")
    assert run.stderr == "error: not hex: 'z' (frames are given as hex bytes, such as 81 05 48 65 6c 6c 6f)\n"


def test_command_refuses_a_handshake_beyond_the_limit_in_one_line(tmp_path) -> None:
    """A handshake is read whole: past HANDSHAKE_LIMIT characters, one line says so, no traceback."""
    from common.explain import HANDSHAKE_LIMIT
    path = tmp_path / "huge.txt"
    path.write_text(RFC_REQUEST + "X-Padding: " + "a" * HANDSHAKE_LIMIT + "\n")
    run = subprocess.run([sys.executable, "-m", "common", "explain", "--file", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr == (f"error: more than {HANDSHAKE_LIMIT:,} characters of handshake: a server reads at most"
                          " 65,536 bytes of one (common.http11.MAX_HEAD)\n")

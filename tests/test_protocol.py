"""Unit tests of common.protocol.Receiver: bytes in, events out, no sockets."""

import pytest

from common.exceptions import InvalidPayload, PayloadTooBig, ProtocolError
from common.frames import Close, Opcode, encode_frame
from common.protocol import Receiver


def frame(opcode, payload, fin=True, rsv1=False):
    """A client frame, masked as clients must (§5.3)."""
    return encode_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=True)


def server_receiver(**kwargs):
    return Receiver(expect_masked=True, **kwargs)


def error_of(events):
    """The ProtocolError that ends the events, checking it is last."""
    assert events and events[-1][0] is None, events
    return events[-1][1]


def test_text_and_binary_messages():
    """§5.6: text arrives as str, binary as bytes."""
    events = server_receiver().feed(frame(Opcode.TEXT, "café".encode()) + frame(Opcode.BINARY, b"\x00\xff"))
    assert events == [(Opcode.TEXT, "café"), (Opcode.BINARY, b"\x00\xff")]


def test_frames_split_at_every_byte_are_reassembled():
    """A frame may arrive one byte at a time; nothing comes out until it is whole."""
    data = frame(Opcode.TEXT, "κόσμε".encode()) + frame(Opcode.BINARY, b"x" * 300)
    receiver = server_receiver()
    events = []
    for i in range(len(data)):
        events += receiver.feed(data[i : i + 1])
    assert events == [(Opcode.TEXT, "κόσμε"), (Opcode.BINARY, b"x" * 300)]


def test_fragmented_message_with_control_frames_in_between():
    """§5.4: control frames may be injected in the middle of a fragmented message."""
    data = (
        frame(Opcode.TEXT, b"Hel", fin=False)
        + frame(Opcode.PING, b"p")
        + frame(Opcode.CONT, b"lo", fin=False)
        + frame(Opcode.PONG, b"q")
        + frame(Opcode.CONT, b"!")
    )
    assert server_receiver().feed(data) == [(Opcode.PING, b"p"), (Opcode.PONG, b"q"), (Opcode.TEXT, "Hello!")]


@pytest.mark.parametrize(
    "data, reason",
    [
        (encode_frame(Opcode.TEXT, b"unmasked"), "must be masked"),
        (bytes([0x91]) + frame(Opcode.TEXT, b"x")[1:], "reserved bits"),
        (bytes([0xA1]) + frame(Opcode.TEXT, b"x")[1:], "reserved bits"),
        (bytes([0xC1]) + frame(Opcode.TEXT, b"x")[1:], "reserved bits"),
        (frame(3, b""), "reserved data opcode"),
        (frame(0xB, b""), "reserved control opcode"),
        (frame(Opcode.PING, b"", fin=False), "fragmented control"),
        (frame(Opcode.PING, b"x" * 126), "over 125"),
        (frame(Opcode.CONT, b"x"), "no message to continue"),
        (frame(Opcode.TEXT, b"a", fin=False) + frame(Opcode.BINARY, b"b"), "inside a fragmented message"),
        (b"\x82\xff" + b"\x80" + b"\x00" * 7 + b"mask", "top bit"),
    ],
)
def test_protocol_violations_fail_with_1002(data, reason):
    """§5.1, §5.2, §5.4, §5.5: each violation fails the connection with 1002."""
    exc = error_of(server_receiver().feed(data))
    assert type(exc) is ProtocolError and exc.code == 1002
    assert reason in str(exc)


def test_client_side_rejects_masked_server_frames():
    """§5.1: a client MUST close the connection if it detects a masked frame."""
    exc = error_of(Receiver(expect_masked=False).feed(frame(Opcode.TEXT, b"x")))
    assert "must not be masked" in str(exc)


def test_messages_before_a_bad_frame_come_out_first():
    """Frames take effect in order: the good message precedes the error."""
    events = server_receiver().feed(frame(Opcode.TEXT, b"ok") + frame(0x7, b""))
    assert events[0] == (Opcode.TEXT, "ok")
    assert error_of(events).code == 1002


def test_nothing_counts_after_an_error():
    """After failing, further bytes are ignored rather than parsed."""
    receiver = server_receiver()
    receiver.feed(frame(0x7, b""))
    assert receiver.feed(frame(Opcode.TEXT, b"late")) == []


def test_close_frame_ends_the_stream():
    """§5.5.1: after a close frame the peer sends no more data frames."""
    receiver = server_receiver()
    events = receiver.feed(frame(Opcode.CLOSE, b"\x03\xe8bye") + frame(Opcode.TEXT, b"ignored"))
    assert events == [(Opcode.CLOSE, Close(1000, "bye"))]


def test_oversized_frame_fails_with_1009_from_its_header_alone():
    """§10.4: the size is refused before the payload is buffered."""
    header_only = frame(Opcode.BINARY, b"x" * 2000)[:8]
    exc = error_of(server_receiver(max_size=1000).feed(header_only))
    assert isinstance(exc, PayloadTooBig) and exc.code == 1009


def test_fragmented_message_over_max_size_fails_with_1009():
    """max_size bounds the whole message, not each frame."""
    data = frame(Opcode.BINARY, b"x" * 600, fin=False) + frame(Opcode.CONT, b"x" * 600)
    assert error_of(server_receiver(max_size=1000).feed(data)).code == 1009


def test_many_tiny_fragments_are_bounded_by_size_not_count():
    """A 64 KiB message in 65,536 one-byte fragments is accepted."""
    data = frame(Opcode.BINARY, b"x", fin=False) + frame(Opcode.CONT, b"x", fin=False) * 65534 + frame(Opcode.CONT, b"x")
    assert server_receiver(max_size=65536).feed(data) == [(Opcode.BINARY, b"x" * 65536)]


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff",  # never valid
        b"\xc0\xaf",  # overlong "/"
        b"\xed\xa0\x80",  # UTF-16 surrogate
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
        b"\x80",  # lone continuation byte
        b"abc\xe2\x82",  # truncated at the end of the message
    ],
)
def test_invalid_utf8_fails_with_1007(payload):
    """§8.1: a text message that is not valid UTF-8 fails with 1007."""
    exc = error_of(server_receiver().feed(frame(Opcode.TEXT, payload)))
    assert isinstance(exc, InvalidPayload) and exc.code == 1007


@pytest.mark.parametrize("split", range(1, 13))
def test_valid_utf8_split_across_fragments_at_any_byte(split):
    """A multibyte character may be cut between two fragments."""
    data = "κόσμε𝄞".encode()
    events = server_receiver().feed(frame(Opcode.TEXT, data[:split], fin=False) + frame(Opcode.CONT, data[split:]))
    assert events == [(Opcode.TEXT, "κόσμε𝄞")]


def test_invalid_utf8_fails_fast_across_fragments():
    """§8.1 fail fast: the second fragment is bad; the third never needs to come."""
    events = server_receiver().feed(frame(Opcode.TEXT, "κόσμε".encode(), fin=False) + frame(Opcode.CONT, b"\xf4\x90", fin=False))
    assert error_of(events).code == 1007


@pytest.mark.parametrize("bad", [b"\xf4\x90", b"\xed\xa0", b"\xc0"])
def test_invalid_utf8_fails_fast_inside_one_incomplete_frame(bad):
    """Fail fast within a frame: a bad prefix of its payload is enough."""
    whole = frame(Opcode.TEXT, b"hello " + bad + b"x" * 1000)
    events = server_receiver().feed(whole[: 8 + 6 + len(bad)])  # header, mask, then the bad bytes
    assert error_of(events).code == 1007


def test_text_frame_received_in_pieces_decodes_once_and_whole():
    """A long text frame arriving in many reads gives one correct message."""
    text = "ünïcödé " * 5000
    data = frame(Opcode.TEXT, text.encode())
    receiver = server_receiver()
    events = []
    for i in range(0, len(data), 777):
        events += receiver.feed(data[i : i + 777])
    assert events == [(Opcode.TEXT, text)]


def test_wire_view_log_sees_every_frame():
    """The log hook gets opcode, FIN, RSV1 and the unmasked payload of each frame."""
    seen = []
    receiver = server_receiver(log=lambda *args: seen.append(args))
    receiver.feed(frame(Opcode.TEXT, b"a", fin=False) + frame(Opcode.CONT, b"b"))
    assert seen == [(Opcode.TEXT, False, False, b"a"), (Opcode.CONT, True, False, b"b")]

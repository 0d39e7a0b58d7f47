"""Unit tests of common.protocol.Receiver: bytes in, events out, no sockets."""

import tracemalloc
import zlib

import pytest

from common.deflate import PerMessageDeflate
from common.exceptions import InvalidPayload, PayloadTooBig, ProtocolError
from common.frames import Close, Opcode, encode_frame
from common.protocol import _KEEP, Receiver


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
    # Named, not shown: the frames hold random masking keys, which would change the ids at every run.
    ids=["unmasked", "rsv3", "rsv2", "rsv1", "reserved-data-opcode", "reserved-control-opcode", "fragmented-control",
         "control-over-125", "continuation-without-message", "message-inside-fragmented", "64-bit-length-top-bit"],
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


# RFC 6455 §5.7's examples, as the RFC prints them (literal bytes, not our
# encoder's): the frames, whether they are masked (a server's Receiver expects
# masked frames, a client's unmasked ones, §5.1), and the events they give.
BINARY_256 = bytes(range(256))
BINARY_64K = bytes(range(256)) * 256
RFC_EXAMPLES = [
    pytest.param([bytes.fromhex("810548656c6c6f")], False, [(Opcode.TEXT, "Hello")], id="unmasked-text"),
    pytest.param([bytes.fromhex("818537fa213d7f9f4d5158")], True, [(Opcode.TEXT, "Hello")], id="masked-text"),
    pytest.param([bytes.fromhex("010348656c"), bytes.fromhex("80026c6f")], False, [(Opcode.TEXT, "Hello")],
                 id="fragmented-unmasked-text"),
    pytest.param([bytes.fromhex("890548656c6c6f")], False, [(Opcode.PING, b"Hello")], id="unmasked-ping"),
    pytest.param([bytes.fromhex("8a8537fa213d7f9f4d5158")], True, [(Opcode.PONG, b"Hello")], id="masked-pong"),
    pytest.param([bytes.fromhex("827e0100") + BINARY_256], False, [(Opcode.BINARY, BINARY_256)],
                 id="256-bytes-binary-16-bit-length"),
    pytest.param([bytes.fromhex("827f0000000000010000") + BINARY_64K], False, [(Opcode.BINARY, BINARY_64K)],
                 id="64-KiB-binary-64-bit-length"),
]


@pytest.mark.parametrize("frames, masked, events", RFC_EXAMPLES)
def test_rfc_examples_parse(frames, masked, events):
    """§5.7: each example, fed frame by frame to the side that may receive it, gives its message;
    nothing comes out before the last frame."""
    receiver = Receiver(expect_masked=masked)
    *before, last = frames
    for data in before:
        assert receiver.feed(data) == []
    assert receiver.feed(last) == events


@pytest.mark.parametrize("frames, masked, events", RFC_EXAMPLES)
def test_rfc_examples_fail_with_1002_on_the_wrong_side(frames, masked, events):
    """§5.1: a server fails the connection on an unmasked frame, a client on a masked one: 1002."""
    exc = error_of(Receiver(expect_masked=not masked).feed(frames[0]))
    assert type(exc) is ProtocolError and exc.code == 1002
    assert ("must be masked" if not masked else "must not be masked") in str(exc)


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
    """The log hook gets opcode, FIN, RSV1, the unmasked payload, its size and the frame's bytes:
    all of them up to 125 bytes of payload, else the header."""
    seen = []
    receiver = server_receiver(log=lambda *args: seen.append(args))
    first, second = frame(Opcode.TEXT, b"a", fin=False), frame(Opcode.CONT, b"b" * 200)
    receiver.feed(first + second)
    assert seen == [
        (Opcode.TEXT, False, False, b"a", 1, first),           # as it came: masked
        (Opcode.CONT, True, False, b"b" * 200, 200, second[:8]),  # the header: 16-bit length and key
    ]


# ------------------------------------------------- memory held by a message
#
# tracemalloc slows every allocation down to ~1 µs and a frame makes several:
# each test traces some tens of thousands of frames, enough to see a cost of
# a few bytes per fragment, and stays under a second or so.


def traced_feed(receiver, chunks):
    """Feed ``chunks`` with tracemalloc on; return (events, bytes still held, peak)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        events = []
        for chunk in chunks:
            events += receiver.feed(chunk)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return events, current - before, peak - before


@pytest.mark.parametrize(
    "opcode, content",
    [(Opcode.BINARY, b"x"), (Opcode.TEXT, b"x"), (Opcode.TEXT, "κόσμε".encode())],
    ids=["binary", "ascii", "greek"],
)
def test_one_byte_fragments_cost_memory_per_byte_up_to_max_size(opcode, content):
    """A message in 1-byte fragments holds about its size in memory, and 1009 comes at max_size."""
    max_size = 2**15
    data = (content * max_size)[:max_size]
    frames = [frame(opcode, data[:1], fin=False)]
    frames += [frame(Opcode.CONT, data[i : i + 1], fin=False) for i in range(1, max_size)]
    chunks = [b"".join(frames[i : i + 4096]) for i in range(0, max_size, 4096)]
    receiver = server_receiver(max_size=max_size)
    events, held, peak = traced_feed(receiver, chunks)
    assert events == []  # exactly max_size bytes so far: accepted
    assert held < 2 * max_size, f"{held / max_size:.2f} bytes held per payload byte"
    assert peak < 3 * max_size, f"peak {peak / max_size:.2f} bytes per payload byte"
    assert error_of(receiver.feed(frame(Opcode.CONT, b"x"))).code == 1009


def test_empty_continuation_frames_hold_no_memory():
    """Empty fragments never bring a message nearer max_size, so they must cost nothing."""
    chunk = frame(Opcode.CONT, b"", fin=False) * 10_000
    receiver = server_receiver()
    receiver.feed(frame(Opcode.BINARY, b"", fin=False))
    events, held, peak = traced_feed(receiver, [chunk] * 5)
    assert events == []
    assert held < 4096, f"50,000 empty fragments hold {held} bytes"
    assert peak < 2 * len(chunk) + 4096, f"peak {peak} bytes"
    assert receiver.feed(frame(Opcode.CONT, b"end")) == [(Opcode.BINARY, b"end")]


def test_compressed_fragments_inflating_to_nothing_hold_no_memory():
    """RFC 7692: fragments that inflate to nothing (empty stored blocks) must cost nothing either."""
    empty_block = b"\x00\x00\x00\xff\xff"  # BFINAL=0, stored, length 0
    chunk = frame(Opcode.CONT, empty_block, fin=False) * 10_000
    receiver = server_receiver(extension=PerMessageDeflate())
    receiver.feed(frame(Opcode.TEXT, empty_block, fin=False, rsv1=True))
    events, held, peak = traced_feed(receiver, [chunk] * 3)
    assert events == []
    assert held < 4096, f"30,000 empty compressed fragments hold {held} bytes"
    assert peak < 2 * len(chunk) + 4096, f"peak {peak} bytes"
    compressor = zlib.compressobj(wbits=-15)
    end = compressor.compress("é!".encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert receiver.feed(frame(Opcode.CONT, end[:-4])) == [(Opcode.TEXT, "é!")]


# Characters of 1 to 4 bytes, and fragment sizes on both sides of _KEEP, from
# which the receiver keeps a piece as it is rather than gathering it.
TEXT = "aé€𝄞" * 3000
SIZES = [[1], [0, 3], [5, _KEEP - 1], [_KEEP], [_KEEP + 1, 1, 2], [7, 4 * _KEEP, 6 * _KEEP, 1]]


def fragments(opcode, data, sizes):
    """``data`` as one message in frames of ``sizes`` bytes (cycling), as a list."""
    frames = []
    pos = 0
    while pos < len(data):
        size = sizes[len(frames) % len(sizes)]
        frames.append(frame(opcode if not frames else Opcode.CONT, data[pos : pos + size], fin=pos + size >= len(data)))
        pos += size
    return frames


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("read_size", [None, 700])
def test_fragments_of_any_size_reassemble_exactly(sizes, read_size):
    """Small fragments, large ones and reads that cut frames anywhere give back the same message."""
    data = b"".join(fragments(Opcode.TEXT, TEXT.encode(), sizes) + fragments(Opcode.BINARY, TEXT.encode(), sizes))
    receiver = server_receiver()
    read_size = read_size or len(data)
    events = []
    for i in range(0, len(data), read_size):
        events += receiver.feed(data[i : i + read_size])
    assert events == [(Opcode.TEXT, TEXT), (Opcode.BINARY, TEXT.encode())]


@pytest.mark.parametrize("sizes", SIZES[2:])
def test_invalid_utf8_after_many_fragments_fails_fast(sizes):
    """§8.1: a bad byte fails the message at the fragment that holds it, small or large."""
    valid = TEXT.encode()
    frames = fragments(Opcode.TEXT, valid + b"\xff" + b"x" * 3000, sizes)
    # Feed the frames up to the one holding the bad byte; more would follow.
    count = end = 0
    while end <= len(valid):
        end += sizes[count % len(sizes)]
        count += 1
    assert count < len(frames)
    events = server_receiver().feed(b"".join(frames[:count]))
    assert error_of(events).code == 1007


# ------------------------------------------------ feed(data, max_messages)


def message(n):
    return frame(Opcode.TEXT, f"m{n}".encode())


def test_feed_stops_after_max_messages_and_resumes_with_empty_feeds():
    """Each call returns at most max_messages messages; the rest stays buffered until asked for."""
    data = b"".join(message(n) for n in range(7))
    receiver = server_receiver()
    assert receiver.feed(data, max_messages=3) == [(Opcode.TEXT, "m0"), (Opcode.TEXT, "m1"), (Opcode.TEXT, "m2")]
    assert receiver.pending == len(data) - 3 * len(message(0))
    assert receiver.feed(b"", 3) == [(Opcode.TEXT, "m3"), (Opcode.TEXT, "m4"), (Opcode.TEXT, "m5")]
    assert receiver.pending == len(message(6))
    assert receiver.feed(b"", 3) == [(Opcode.TEXT, "m6")]
    assert receiver.pending == 0


def test_control_frames_are_events_but_not_messages():
    """Pings and pongs come out in order and do not use up max_messages."""
    ping, pong = frame(Opcode.PING, b"p"), frame(Opcode.PONG, b"q")
    receiver = server_receiver()
    events = receiver.feed(ping + message(0) + pong + ping + message(1) + pong + message(2), 2)
    assert events == [(Opcode.PING, b"p"), (Opcode.TEXT, "m0"), (Opcode.PONG, b"q"), (Opcode.PING, b"p"), (Opcode.TEXT, "m1")]
    assert receiver.feed(b"", 2) == [(Opcode.PONG, b"q"), (Opcode.TEXT, "m2")]


def test_a_fragmented_message_counts_once_when_complete():
    """Fragments are not messages: only the last one completes one."""
    data = frame(Opcode.BINARY, b"a", fin=False) + frame(Opcode.CONT, b"b", fin=False) + frame(Opcode.CONT, b"c")
    receiver = server_receiver()
    assert receiver.feed(data + message(0), 1) == [(Opcode.BINARY, b"abc")]
    assert receiver.pending == len(message(0))


def test_protocol_error_after_the_limit_comes_only_when_resumed():
    """A bad frame beyond max_messages is not parsed yet, so it fails nothing yet."""
    receiver = server_receiver()
    assert receiver.feed(message(0) + message(1) + frame(0x7, b""), 2) == [(Opcode.TEXT, "m0"), (Opcode.TEXT, "m1")]
    assert receiver.pending > 0 and not receiver.done
    assert error_of(receiver.feed(b"", 2)).code == 1002
    assert receiver.pending == 0


def test_zero_max_messages_buffers_without_parsing():
    """max_messages=0 only buffers: even a bad frame stays unparsed."""
    receiver = server_receiver()
    data = message(0) + frame(0x7, b"")
    assert receiver.feed(data, 0) == []
    assert receiver.pending == len(data)
    assert receiver.feed(b"", 0) == [] and receiver.pending == len(data)
    events = receiver.feed(b"")
    assert events[0] == (Opcode.TEXT, "m0") and error_of(events).code == 1002


def test_pending_is_zero_when_only_the_start_of_a_frame_is_left():
    """pending counts only what feed() stopped short of, not an incomplete frame it looked at."""
    m1, m2 = message(1), message(2)  # each masked once, with its own key
    receiver = server_receiver()
    assert receiver.feed(message(0) + m1[:3], 5) == [(Opcode.TEXT, "m0")]
    assert receiver.pending == 0
    # Stopped at the limit before an incomplete frame: pending, then nothing to resume.
    assert receiver.feed(m1[3:] + m2[:3], 1) == [(Opcode.TEXT, "m1")]
    assert receiver.pending == 3
    assert receiver.feed(b"", 1) == [] and receiver.pending == 0
    assert receiver.feed(m2[3:], 1) == [(Opcode.TEXT, "m2")]


def test_pending_is_zero_after_a_close_frame():
    """After the peer's close nothing more is parsed, so nothing is pending."""
    receiver = server_receiver()
    close = frame(Opcode.CLOSE, b"\x03\xe8")
    assert receiver.feed(close + message(0) + message(1), 1) == [(Opcode.CLOSE, Close(1000, ""))]
    assert receiver.pending == 0


@pytest.mark.parametrize("max_messages", [1, 2, 3, 5])
def test_events_and_their_order_do_not_depend_on_max_messages(max_messages):
    """Feeding in steps of max_messages gives exactly the events of one unlimited feed."""
    ping = frame(Opcode.PING, b"p")
    data = b"".join(
        [message(0), ping, ping, frame(Opcode.TEXT, b"fr", fin=False), ping, frame(Opcode.CONT, b"ag")]
        + [message(n) for n in range(1, 6)] + [ping, frame(Opcode.BINARY, b"\x00"), frame(Opcode.CLOSE, b"")]
    )
    expected = server_receiver().feed(data)
    receiver = server_receiver()
    events = receiver.feed(data, max_messages)
    calls = [events]
    while receiver.pending:
        assert len(calls) < len(data), "feed(b'') makes no progress"
        calls.append(receiver.feed(b"", max_messages))
    assert [event for call in calls for event in call] == expected
    assert all(sum(opcode in (Opcode.TEXT, Opcode.BINARY) for opcode, _ in call) <= max_messages for call in calls)
    assert len(calls) > 1


def test_negative_max_messages_is_refused():
    """A negative limit is a caller's mistake, not "no limit"."""
    with pytest.raises(ValueError):
        server_receiver().feed(b"", -1)

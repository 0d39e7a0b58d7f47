"""The protocol without I/O: :class:`common.protocol.Protocol`, byte for byte.

Two Protocol objects, a client and a server, are wired by hand: what one
side's actions return is what the other receives. No socket, no event loop.
The close handshake is checked in every order (either side first, both at
once), with the bytes on the wire, the states, the close frames recorded, who
closes TCP first, and what the application is told; then failures (a bad
frame in the middle of a message, invalid UTF-8, a message too big), EOF
without a close, pings, the order of events, masking and compression.
"""

from __future__ import annotations

import pytest

from common import deflate
from common.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidPayload, PayloadTooBig, ProtocolError
from common.frames import Close, CloseCode
from common.protocol import Ping, Pong, Protocol, State

# RFC 6455 §5.7: "Hello" in one unmasked frame, and masked with the key 37 fa 21 3d.
HELLO = bytes.fromhex("81 05 48 65 6c 6c 6f")
MASKED_HELLO = bytes.fromhex("81 85 37 fa 21 3d 7f 9f 4d 51 58")
KEY = bytes.fromhex("37 fa 21 3d")


@pytest.fixture
def fixed_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's masking keys are all 37 fa 21 3d (the RFC's), so that its bytes can be compared."""
    monkeypatch.setattr("common.frames.os.urandom", lambda n: KEY[:n])


def mask(frame: bytes) -> bytes:
    """The client's form of an unmasked frame of up to 125 bytes: mask bit and RFC key."""
    payload = bytes(b ^ KEY[i % 4] for i, b in enumerate(frame[2:]))
    return bytes((frame[0], frame[1] | 0x80)) + KEY + payload


def pair() -> tuple[Protocol, Protocol]:
    return Protocol(is_client=True), Protocol(is_client=False)


def close_frame(code: int, reason: str = "") -> bytes:
    payload = Close(code, reason).serialize()
    return bytes((0x88, len(payload))) + payload


# ------------------------------------------------------------------ messages

def test_the_rfc_examples_in_both_directions(fixed_key: None) -> None:
    client, server = pair()
    assert server.send_message("Hello") == [HELLO]
    assert client.send_message("Hello") == [MASKED_HELLO]
    assert client.receive_data(HELLO) == ["Hello"]
    assert server.receive_data(MASKED_HELLO) == ["Hello"]


def test_each_side_refuses_the_other_sides_masking() -> None:
    client, server = pair()
    [error] = server.receive_data(HELLO)                # a client frame must be masked
    assert isinstance(error, ProtocolError) and error.code == 1002
    [error] = client.receive_data(MASKED_HELLO)         # a server frame must not be
    assert isinstance(error, ProtocolError) and error.code == 1002


def test_events_come_in_the_order_of_the_wire_and_pings_are_answered_at_once(fixed_key: None) -> None:
    client, server = pair()
    wire = b"".join([
        *client.send_fragments(["Hel", "lo"]),          # a fragmented text message...
        *client.send_ping(b"are you there"),            # ...then a ping
        *client.send_message(b"\x00\x01"),
        *client.send_pong(b"heartbeat"),
        *client.send_close(Close(1000, "done")),
    ])
    events = server.receive_data(wire)
    assert events == ["Hello", Ping(b"are you there"), b"\x00\x01", Pong(b"heartbeat"), Close(1000, "done")]
    assert server.data_to_send() == [b"\x8a\x0dare you there"]     # the pong, unmasked
    assert server.data_to_send() == []                              # taken once


def test_a_ping_between_fragments_is_answered_before_the_message_ends(fixed_key: None) -> None:
    client, server = pair()
    first = mask(bytes.fromhex("01 03") + b"Hel")                    # FIN clear: more to come
    [ping] = client.send_ping(b"x")
    last = mask(bytes.fromhex("80 02") + b"lo")
    assert server.receive_data(first + ping) == [Ping(b"x")]
    assert server.data_to_send() == [b"\x8a\x01x"]
    assert server.receive_data(last) == ["Hello"]


def test_at_most_max_messages_are_parsed_and_the_rest_waits() -> None:
    client, server = pair()
    wire = b"".join(b"".join(client.send_message(str(n))) for n in range(5))
    assert server.receive_data(wire, 2) == ["0", "1"]
    assert server.pending == len(wire) - 2 * len(mask(b"\x81\x010"))
    assert server.receive_data(b"", 10) == ["2", "3", "4"]
    assert server.pending == 0


# ------------------------------------------------------------------ closing

def test_the_server_closes_first() -> None:
    client, server = pair()
    assert server.send_close(Close(1001, "going away")) == [close_frame(1001, "going away")]
    assert server.state is State.CLOSING and not server.close_transport and not server.half_close

    assert client.receive_data(close_frame(1001, "going away")) == [Close(1001, "going away")]
    assert client.state is State.OPEN                           # until the adapter answers
    answer = client.answer_close()                              # the same code and reason, masked
    assert len(answer) == 1
    assert client.state is State.CLOSING and client.close_rcvd_then_sent is True
    assert not client.close_transport                           # the client waits for the server's FIN

    assert server.receive_data(b"".join(answer)) == [Close(1001, "going away")]
    assert server.answer_close() == []                          # ours went first: nothing to answer
    assert server.close_transport                               # §7.1.1: the server closes TCP first
    assert server.close_rcvd_then_sent is False

    for side in (client, server):
        side.receive_eof()
        assert side.state is State.CLOSED
        exc = side.closed_exception()
        assert isinstance(exc, ConnectionClosedOK) and exc.code == 1001 and exc.reason == "going away"


def test_the_client_closes_first(fixed_key: None) -> None:
    client, server = pair()
    assert client.send_close(Close(1000)) == [mask(close_frame(1000))]
    assert server.receive_data(mask(close_frame(1000))) == [Close(1000)]
    assert server.answer_close() == [close_frame(1000)]         # echoes the code (§5.5.1)
    assert server.close_transport and server.close_rcvd_then_sent is True
    assert client.receive_data(close_frame(1000)) == [Close(1000)]
    assert client.answer_close() == [] and client.state is State.CLOSING and not client.close_transport


def test_a_close_without_a_code_is_answered_without_one(fixed_key: None) -> None:
    client, server = pair()
    assert server.receive_data(mask(b"\x88\x00")) == [Close(CloseCode.NO_STATUS_RCVD)]
    assert server.answer_close() == [b"\x88\x00"]
    server.receive_eof()
    assert isinstance(server.closed_exception(), ConnectionClosedOK)   # 1005: how browsers close


def test_both_sides_close_at_once() -> None:
    client, server = pair()
    from_client = b"".join(client.send_close(Close(1000, "client")))
    from_server = b"".join(server.send_close(Close(1000, "server")))
    assert client.receive_data(from_server) == [Close(1000, "server")]
    assert server.receive_data(from_client) == [Close(1000, "client")]
    assert client.answer_close() == [] and server.answer_close() == []
    assert client.close_rcvd_then_sent is False and server.close_rcvd_then_sent is False
    assert server.close_transport and not client.close_transport
    server.receive_eof()
    assert server.closed_exception().rcvd == Close(1000, "client")


def test_the_close_handshake_in_words() -> None:
    """describe_close(), the wire view's account: who closed, with which code, who answered."""
    client, server = pair()
    assert server.describe_close() == "no close frame either way (1006, abnormal closure)"
    client.receive_data(b"".join(server.send_close(Close(1001, "bye"))))
    assert server.describe_close() == "the server closed with 1001 (going away) bye; the client's close never came"
    server.receive_data(b"".join(client.answer_close()))
    assert client.describe_close() == (
        "the server closed with 1001 (going away) bye; the client answered with 1001 (going away) bye")
    assert server.describe_close() == (
        "the server closed with 1001 (going away) bye; the client's close came back with 1001 (going away) bye")


def test_nothing_may_be_sent_after_our_close() -> None:
    client, server = pair()
    server.send_close(Close(1000))
    with pytest.raises(RuntimeError, match="CLOSING"):
        server.send_close(Close(1000))
    assert server.fail(1002, "too late") == []                  # already closing: nothing more
    # A ping that arrives after our close is not answered: the close was our last frame.
    assert server.receive_data(mask(b"\x89\x01p")) == [Ping(b"p")]
    assert server.data_to_send() == []


# ------------------------------------------------------------------ failing

def test_a_bad_frame_in_the_middle_of_a_message_fails_with_1002() -> None:
    client, server = pair()
    events = server.receive_data(mask(b"\x01\x03Hel") + mask(b"\x81\x02lo"))   # a new message inside one
    assert len(events) == 1 and isinstance(events[0], ProtocolError) and events[0].code == 1002
    frames = server.fail(events[0].code, str(events[0]))
    assert frames == [close_frame(1002, str(events[0]))]
    assert server.half_close and server.failed and server.state is State.CLOSING
    # The client sees the reason and answers; after its error the server reads nothing more:
    # it has ended its direction and waits for the client's EOF.
    [close] = client.receive_data(b"".join(frames))
    assert close.code == 1002 and "fragmented message" in close.reason
    assert server.receive_data(b"".join(client.answer_close())) == []
    assert server.close_rcvd is None and not server.close_transport
    server.receive_eof()
    exc = server.closed_exception()
    assert isinstance(exc, ConnectionClosedError) and exc.sent is not None and exc.sent.code == 1002


def test_messages_before_a_bad_frame_are_delivered_first() -> None:
    client, server = pair()
    wire = mask(b"\x81\x02ok") + mask(b"\x81\x02\xc3\x28")      # then invalid UTF-8
    first, error = server.receive_data(wire)
    assert first == "ok"
    assert isinstance(error, InvalidPayload) and error.code == 1007
    assert server.receive_data(mask(b"\x81\x02ok")) == []       # nothing counts after the error


def test_a_message_over_max_size_fails_with_1009() -> None:
    server = Protocol(is_client=False, max_size=4)
    [error] = server.receive_data(mask(b"\x82\x05\x00\x01\x02\x03\x04"))
    assert isinstance(error, PayloadTooBig) and error.code == 1009
    [frame] = server.fail(error.code, "a long explanation " * 20)
    assert len(frame) == 2 + 125                                # the reason cut to fit (§5.5)


def test_a_reason_is_cut_on_a_character_boundary() -> None:
    server = Protocol(is_client=False)
    [frame] = server.fail(1011, "é" * 100)                      # 200 bytes of UTF-8
    close = Close.parse(frame[2:])
    assert close.reason == "é" * 61 and len(frame[4:]) == 122


def test_eof_without_a_close_is_an_abnormal_closure() -> None:
    client, server = pair()
    server.receive_data(mask(b"\x01\x03Hel"))                   # a message in progress, then EOF
    server.receive_eof()
    assert server.state is State.CLOSED
    exc = server.closed_exception()
    assert isinstance(exc, ConnectionClosedError)
    assert exc.code == CloseCode.ABNORMAL_CLOSURE and exc.rcvd is None and exc.sent is None


def test_the_client_never_half_closes() -> None:
    client = Protocol(is_client=True)
    client.fail(1002, "bad frame from the server")
    assert client.failed and not client.half_close


# ------------------------------------------------------------------ compression

def test_large_messages_are_compressed_and_small_ones_are_not() -> None:
    client_extension = deflate.PerMessageDeflate()
    server_extension = deflate.PerMessageDeflate()
    client = Protocol(is_client=True, extension=client_extension)
    server = Protocol(is_client=False, extension=server_extension)
    text = "telemetry 1.000 2.000 3.000; " * 100
    [frame] = server.send_message(text)
    assert frame[0] == 0xC1 and len(frame) < len(text) // 5    # FIN + RSV1 + text, a fifth of the size
    assert client.receive_data(frame) == [text]
    [small] = server.send_message("hi")
    assert small == b"\x81\x02hi"                               # under the threshold: as it is
    assert client.receive_data(small) == ["hi"]
    assert server.receive_data(b"".join(client.send_message(text))) == [text]


def test_large_payloads_come_apart_from_their_header() -> None:
    server = Protocol(is_client=False)
    payload = bytes(range(256)) * 256                           # 64 KiB
    header, body = server.send_message(payload)
    assert header == bytes.fromhex("82 7f 00 00 00 00 00 01 00 00") and body == payload
    assert Protocol(is_client=True).receive_data(header + body) == [payload]


@pytest.mark.parametrize("opcode", [0x9, 0x8], ids=["ping", "close"])
def test_a_compressed_control_frame_is_refused_for_what_it_is(opcode: int) -> None:
    """RFC 7692 §6.1: RSV1 on a ping or a close, with deflate agreed, fails with 1002 and says why."""
    client = Protocol(is_client=True, extension=deflate.PerMessageDeflate())
    server = Protocol(is_client=False, extension=deflate.PerMessageDeflate())
    [error] = server.receive_data(mask(bytes((0xC0 | opcode, 0))))
    assert isinstance(error, ProtocolError) and error.code == 1002
    [closing] = client.receive_data(b"".join(server.fail(error.code, str(error))))
    assert isinstance(closing, Close) and closing.code == 1002
    assert closing.reason == (
        "reserved bits set on a control frame: control frames cannot be compressed (RFC 7692 §6.1)"
    )

"""permessage-deflate (RFC 7692) without sockets: common/deflate.py and the Receiver's part in it.

* negotiation: the header grammar (RFC 6455 §9.1), the server's choice among
  offers (declining those with bad parameters, RFC 7692 §7) and its answer
  (§7.1), the client's checks of that answer;
* compression: the RFC's own byte vectors (§7.2.3), context takeover, the
  zlib window quirks, the zip-bomb bound, RSV1 where it may not be;
* the test's own fixed-Huffman DEFLATE encoder (deflate_util.py), checked
  against zlib, since the live tests rely on it.

The same decisions over TCP, through real handshakes and messages, are in
test_deflate_live.py.
"""

from __future__ import annotations

import random
import tracemalloc
import zlib

import pytest

from common import NegotiationError, PayloadTooBig, ProtocolError
from common.deflate import Params, PerMessageDeflate, client_accept, client_offer, parse_extensions, server_negotiate
from common.handshake import accept_request
from common.http11 import parse_request
from common.protocol import Receiver

try:                                    # tests/ as a package or as a plain directory
    from . import rawws
    from .deflate_util import (BINARY, CLOSE, CONT, MALFORMED_OFFERS, PING, RSV1, RSV2, RSV3, TAIL, TEXT, MiB,
                               agreed, binary_payload, fixed_huffman_deflate, frame, text_payload)
except ImportError:
    import rawws
    from deflate_util import (BINARY, CLOSE, CONT, MALFORMED_OFFERS, PING, RSV1, RSV2, RSV3, TAIL, TEXT, MiB,
                              agreed, binary_payload, fixed_huffman_deflate, frame, text_payload)


# ============================================================ the test's DEFLATE encoder


@pytest.mark.parametrize("window_bits", [8, 9, 15])
def test_fixed_huffman_encoder_is_valid_deflate(window_bits):
    """The test's own encoder makes streams that zlib inflates (sanity check)."""
    history = binary_payload(3000, seed=1)
    data = text_payload(5000) + history[-200:] + bytes(300)
    inflate = zlib.decompressobj(-15)
    assert inflate.decompress(fixed_huffman_deflate(history, window_bits) + TAIL) == history
    assert inflate.decompress(fixed_huffman_deflate(data, window_bits, history) + TAIL) == data  # context takeover
    assert zlib.decompressobj(-15).decompress(fixed_huffman_deflate(data, window_bits, final=True)) == data


# ================================================== negotiation: the header


@pytest.mark.parametrize(
    "values, expected",
    [
        (["permessage-deflate"], [("permessage-deflate", [])]),
        (["permessage-deflate; client_max_window_bits"], [("permessage-deflate", [("client_max_window_bits", None)])]),
        (["permessage-deflate;client_max_window_bits=10;server_no_context_takeover"],
         [("permessage-deflate", [("client_max_window_bits", "10"), ("server_no_context_takeover", None)])]),
        (["permessage-deflate ;\tserver_max_window_bits = 10 "], [("permessage-deflate", [("server_max_window_bits", "10")])]),
        (['permessage-deflate; server_max_window_bits="10"'], [("permessage-deflate", [("server_max_window_bits", "10")])]),
        (['x; a="b\\c"'], [("x", [("a", "bc")])]),
        (["a, b; c", "d"], [("a", []), ("b", [("c", None)]), ("d", [])]),
        ([", a ,, b ,"], [("a", []), ("b", [])]),
        ([""], []),
        ([], []),
    ],
    ids=["bare", "cmwb", "no-spaces", "ows", "quoted", "quoted-pair", "lists", "empty-elements", "empty", "none"],
)
def test_parse_extensions(values, expected):
    """RFC 6455 §9.1 grammar: comma lists, ;-parameters, token or quoted-string values."""
    assert parse_extensions(values) == expected


@pytest.mark.parametrize(
    "value",
    [
        "permessage-deflate;",
        "permessage-deflate; ;",
        "permessage-deflate; =10",
        "permessage-deflate; client_max_window_bits=",
        'permessage-deflate; client_max_window_bits="10',
        'permessage-deflate; client_max_window_bits="1 0"',
        'permessage-deflate; client_max_window_bits=""',
        "permessage-deflate client_max_window_bits",
        "permessage deflate",
        "; client_max_window_bits",
        "permessage-deflate; a=b=c",
        "permessage-deflate; a=(b)",
    ],
)
def test_parse_extensions_rejects_bad_syntax(value):
    """A header that does not follow RFC 6455 §9.1 is a NegotiationError that says where."""
    with pytest.raises(NegotiationError, match="position"):
        parse_extensions([value])


# ================================================== negotiation: the server


# (offer, the server's own demands, the answer, then the server's extension as
# (local = server no context takeover, remote = client no context takeover,
#  local window bits, remote window bits))
NEGOTIATIONS = [
    ("permessage-deflate", {}, "permessage-deflate", (False, False, 15, 15)),
    ("permessage-deflate; client_max_window_bits", {}, "permessage-deflate", (False, False, 15, 15)),
    ("permessage-deflate; server_no_context_takeover", {}, "permessage-deflate; server_no_context_takeover",
     (True, False, 15, 15)),
    ("permessage-deflate; client_no_context_takeover", {}, "permessage-deflate; client_no_context_takeover",
     (False, True, 15, 15)),
    ("permessage-deflate; server_max_window_bits=10", {}, "permessage-deflate; server_max_window_bits=10",
     (False, False, 10, 15)),
    ("permessage-deflate; server_max_window_bits=8", {}, "permessage-deflate; server_max_window_bits=8",
     (False, False, 8, 15)),
    ("permessage-deflate; client_max_window_bits=9", {}, "permessage-deflate; client_max_window_bits=9",
     (False, False, 15, 9)),
    ("permessage-deflate; client_max_window_bits=8", {}, "permessage-deflate; client_max_window_bits=8",
     (False, False, 15, 8)),
    ('permessage-deflate; server_max_window_bits="12"', {}, "permessage-deflate; server_max_window_bits=12",
     (False, False, 12, 15)),
    ("PerMessage-Deflate; Server_No_Context_Takeover", {}, "permessage-deflate; server_no_context_takeover",
     (True, False, 15, 15)),
    ("permessage-deflate; client_max_window_bits=10; server_max_window_bits=11; client_no_context_takeover; "
     "server_no_context_takeover", {},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11; "
     "client_max_window_bits=10", (True, True, 11, 10)),
    # The server's own demands.
    ("permessage-deflate", {"server_no_context_takeover": True}, "permessage-deflate; server_no_context_takeover",
     (True, False, 15, 15)),
    ("permessage-deflate", {"client_no_context_takeover": True}, "permessage-deflate; client_no_context_takeover",
     (False, True, 15, 15)),
    # A smaller server window needs no announcing (Firefox refuses an unasked one).
    ("permessage-deflate", {"server_max_window_bits": 10}, "permessage-deflate", (False, False, 10, 15)),
    ("permessage-deflate; server_max_window_bits=12", {"server_max_window_bits": 10},
     "permessage-deflate; server_max_window_bits=10", (False, False, 10, 15)),
    ("permessage-deflate; server_max_window_bits=9", {"server_max_window_bits": 10},
     "permessage-deflate; server_max_window_bits=9", (False, False, 9, 15)),
    ("permessage-deflate; client_max_window_bits", {"client_max_window_bits": 10},
     "permessage-deflate; client_max_window_bits=10", (False, False, 15, 10)),
    ("permessage-deflate; client_max_window_bits=12", {"client_max_window_bits": 10},
     "permessage-deflate; client_max_window_bits=10", (False, False, 15, 10)),
    ("permessage-deflate; client_max_window_bits=9", {"client_max_window_bits": 10},
     "permessage-deflate; client_max_window_bits=9", (False, False, 15, 9)),
]


@pytest.mark.parametrize("offer, demands, answer, expected", NEGOTIATIONS)
def test_server_accepts(offer, demands, answer, expected):
    """RFC 7692 §7.1: each parameter offered is accepted and answered as agreed."""
    result = server_negotiate([offer], **demands)
    assert result is not None
    header, extension = result
    assert header == answer
    assert agreed(extension) == expected


@pytest.mark.parametrize(
    "values",
    [[], [""], ["x-webkit-deflate-frame"], ["deflate-frame; no_context_takeover"], ["permessage-deflate-x"]],
    ids=["no-header", "empty", "webkit", "other-with-params", "lookalike"],
)
def test_server_without_an_offer_opens_without_compression(values):
    """No permessage-deflate offer: None, the connection opens uncompressed."""
    assert server_negotiate(values) is None


def test_server_declines_an_offer_it_cannot_honour():
    """§7.1.2.2: a server that must limit the client's window declines an offer without client_max_window_bits."""
    assert server_negotiate(["permessage-deflate"], client_max_window_bits=10) is None


@pytest.mark.parametrize(
    "values",
    [
        ["permessage-deflate; server_no_context_takeover, permessage-deflate; client_max_window_bits"],
        ["permessage-deflate; server_no_context_takeover", "permessage-deflate; client_max_window_bits"],
        ["x-webkit-deflate-frame, permessage-deflate, permessage-deflate; client_max_window_bits=11"],
    ],
    ids=["one-header", "two-headers", "after-others"],
)
def test_server_takes_the_first_acceptable_offer(values):
    """Offers come in order of preference; an unacceptable first one is skipped, not fatal (§5)."""
    header, extension = server_negotiate(values, client_max_window_bits=10)
    assert header.startswith("permessage-deflate; client_max_window_bits=")
    assert extension.remote_max_window_bits <= 10
    assert not extension.local_no_context_takeover  # not the first offer's parameters


def test_server_takes_the_first_offer_when_acceptable():
    """The first acceptable offer wins, even if a later one would compress better."""
    header, _ = server_negotiate(["permessage-deflate; server_no_context_takeover, permessage-deflate"])
    assert header == "permessage-deflate; server_no_context_takeover"


# Offers with bad parameters, each alone in its header, with words of the reason
# the server declines it; the issue's own examples come first.
DECLINED_OFFERS = [
    ("permessage-deflate; foo", "unknown parameter 'foo'"),
    ("permessage-deflate; server_max_window_bits=16", "not a window size"),
    ("permessage-deflate; server_max_window_bits=07", "not a window size"),
    ("permessage-deflate; server_max_window_bits=10; server_max_window_bits=10", "duplicate"),
] + [(offer, message) for offer, message in MALFORMED_OFFERS if offer.count("permessage-deflate") == 1]

# The offer that follows a declined one, and what the server answers to it.
NEXT_OFFER = "permessage-deflate; server_no_context_takeover"


@pytest.mark.parametrize("offer, message", DECLINED_OFFERS)
def test_server_declines_an_offer_with_bad_parameters_and_takes_the_next(offer, message):
    """RFC 7692 §7: "A server MUST decline" an offer with an unknown, repeated or invalid parameter.

    Declined, not refused: the next offer is tried, and without one the
    connection opens uncompressed. The reason is the parameter check's.
    """
    with pytest.raises(NegotiationError, match=message):
        Params.parse(parse_extensions([offer])[0][1], offer=True)
    assert server_negotiate([offer]) is None
    header, extension = server_negotiate([f"{offer}, {NEXT_OFFER}"])
    assert header == NEXT_OFFER and agreed(extension) == (True, False, 15, 15)
    header, extension = server_negotiate([offer, NEXT_OFFER])  # the offers in two header lines
    assert header == NEXT_OFFER and agreed(extension) == (True, False, 15, 15)


def test_server_stops_at_the_first_acceptable_offer():
    """Offers after the one accepted are not the server's business, valid or not."""
    header, _ = server_negotiate(["permessage-deflate, permessage-deflate; client_max_window_bits=20"])
    assert header == "permessage-deflate"


@pytest.mark.parametrize("value", ["permessage-deflate; foo, permessage-deflate;", "permessage-deflate; a=(b)",
                                   'permessage-deflate; client_max_window_bits="1 0", permessage-deflate'])
def test_server_refuses_a_header_that_breaks_the_grammar(value):
    """A header that is not RFC 6455 §9.1's list of extensions cannot be split into offers: HTTP 400."""
    with pytest.raises(NegotiationError, match="position") as info:
        server_negotiate([value])
    assert info.value.status == 400


def upgrade_request(extensions: str):
    return parse_request(
        "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Extensions: {extensions}\r\n\r\n".encode()
    )


def test_accept_request_declines_bad_offers():
    """The server's decision as a whole: 101 with the valid offer after a bad one, 101 without
    compression when none is acceptable, 400 only for a header that breaks the grammar."""
    accept = accept_request(upgrade_request(f"permessage-deflate; foo, {NEXT_OFFER}"), compression="deflate")
    assert ("Sec-WebSocket-Extensions", NEXT_OFFER) in accept.headers
    assert accept.extension is not None and accept.extension.local_no_context_takeover
    accept = accept_request(upgrade_request("permessage-deflate; foo, permessage-deflate; server_max_window_bits=07"),
                            compression="deflate")
    assert accept.extension is None
    assert [name for name, _ in accept.headers] == ["Upgrade", "Connection", "Sec-WebSocket-Accept"]
    with pytest.raises(NegotiationError) as info:
        accept_request(upgrade_request("permessage-deflate; foo, permessage-deflate;"), compression="deflate")
    assert info.value.status == 400


# ================================================== negotiation: the client


def test_client_offer_is_what_browsers_send():
    """By default the client offers what Chrome and Firefox offer."""
    assert client_offer() == "permessage-deflate; client_max_window_bits"


def test_client_offer_with_every_parameter():
    assert (
        client_offer(server_no_context_takeover=True, client_no_context_takeover=True,
                     server_max_window_bits=10, client_max_window_bits=9)
        == "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=10; client_max_window_bits=9"
    )
    assert client_offer(client_max_window_bits=None) == "permessage-deflate"
    with pytest.raises(ValueError):
        client_offer(server_max_window_bits=16)


# (what the client offered, the server's answer, the client's extension as
# (local = client no context takeover, remote = server no context takeover,
#  local window bits, remote window bits))
ANSWERS = [
    ({}, "permessage-deflate", (False, False, 15, 15)),
    ({}, "permessage-deflate; server_no_context_takeover", (False, True, 15, 15)),
    ({}, "permessage-deflate; client_no_context_takeover", (True, False, 15, 15)),
    ({}, "permessage-deflate; server_max_window_bits=10", (False, False, 15, 10)),
    ({}, "permessage-deflate; client_max_window_bits=9", (False, False, 9, 15)),
    ({}, "permessage-deflate; client_max_window_bits=8", (False, False, 8, 15)),
    ({}, 'permessage-deflate; client_max_window_bits="11"', (False, False, 11, 15)),
    ({"client_no_context_takeover": True}, "permessage-deflate", (True, False, 15, 15)),
    ({"server_no_context_takeover": True}, "permessage-deflate; server_no_context_takeover", (False, True, 15, 15)),
    ({"server_max_window_bits": 10}, "permessage-deflate; server_max_window_bits=10", (False, False, 15, 10)),
    ({"server_max_window_bits": 10}, "permessage-deflate; server_max_window_bits=9", (False, False, 15, 9)),
    ({"client_max_window_bits": 10}, "permessage-deflate", (False, False, 10, 15)),
    ({"client_max_window_bits": 10}, "permessage-deflate; client_max_window_bits=9", (False, False, 9, 15)),
    ({"client_max_window_bits": None}, "permessage-deflate", (False, False, 15, 15)),
]


@pytest.mark.parametrize("offered, answer, expected", ANSWERS)
def test_client_accepts(offered, answer, expected):
    """The client applies what the server agreed to (§7.1), and what it promised itself."""
    assert agreed(client_accept([answer], **offered)) == expected


BAD_ANSWERS = [
    ({}, ["x-webkit-deflate-frame"], "did not offer"),
    ({}, ["permessage-deflate, x-foo"], "did not offer"),
    ({}, ["permessage-deflate", "permessage-deflate"], "more than once"),
    ({}, ["permessage-deflate; foo"], "unknown parameter"),
    ({}, ["permessage-deflate; client_max_window_bits"], "needs a value"),
    ({}, ["permessage-deflate; server_max_window_bits=16"], "not a window size"),
    ({}, ["permessage-deflate; client_max_window_bits=7"], "not a window size"),
    ({}, ["permessage-deflate; server_max_window_bits=abc"], "not a window size"),
    ({}, ["permessage-deflate; server_no_context_takeover; server_no_context_takeover"], "duplicate"),
    ({}, ["permessage-deflate; client_no_context_takeover=yes"], "takes no value"),
    ({}, ["permessage-deflate;"], "position"),
    ({"server_no_context_takeover": True}, ["permessage-deflate"], "server_no_context_takeover"),
    ({"server_max_window_bits": 10}, ["permessage-deflate"], "server_max_window_bits"),
    ({"server_max_window_bits": 10}, ["permessage-deflate; server_max_window_bits=12"], "more than"),
    ({"client_max_window_bits": None}, ["permessage-deflate; client_max_window_bits=10"], "did not offer"),
    ({"client_max_window_bits": 10}, ["permessage-deflate; client_max_window_bits=12"], "more than"),
]


@pytest.mark.parametrize("offered, values, message", BAD_ANSWERS)
def test_client_refuses_bad_answers(offered, values, message):
    """Unknown params, values out of range, an extension not offered, an offer not honoured: NegotiationError."""
    with pytest.raises(NegotiationError, match=message):
        client_accept(values, **offered)


# ============================================================ compression


def test_rfc7692_examples():
    """The byte vectors of RFC 7692 §7.2.3 decode to "Hello"; ours encodes the first one exactly."""
    ext = PerMessageDeflate()
    assert ext.encode(b"Hello") == bytes.fromhex("f248cdc9c90700")  # §7.2.3.1
    assert ext.decode(bytes.fromhex("f248cdc9c90700"), True, None) == b"Hello"
    assert ext.decode(bytes.fromhex("f200110000"), True, None) == b"Hello"  # §7.2.3.2, sharing the window
    for vector in ("000500faff48656c6c6f00", "f348cdc9c9070000", "f24805000000ffffcac9c90700"):  # §7.2.3.3-5
        assert PerMessageDeflate().decode(bytes.fromhex(vector), True, None) == b"Hello"


def test_bfinal_ends_the_stream():
    """After a message ending in a BFINAL block, the next message is a new DEFLATE stream (§7.2.3.4)."""
    receiver = PerMessageDeflate()
    assert receiver.decode(PerMessageDeflate().encode(b"first"), True, None) == b"first"
    assert receiver.decode(bytes.fromhex("f348cdc9c9070000"), True, None) == b"Hello"
    assert receiver.decode(PerMessageDeflate().encode(b"again"), True, None) == b"again"


def test_context_takeover_shrinks_repeats():
    """With context takeover a repeated message refers back to the first; without, it costs the same."""
    message = text_payload(1000)
    takeover = PerMessageDeflate()
    first, second = takeover.encode(message), takeover.encode(message)
    assert len(second) < len(first) // 10
    fresh = PerMessageDeflate(local_no_context_takeover=True)
    assert fresh.encode(message) == fresh.encode(message) == first
    receiver = PerMessageDeflate()
    assert receiver.decode(first, True, None) == receiver.decode(second, True, None) == message
    # A receiver that forgets between messages cannot follow a sender that remembers.
    forgetful = PerMessageDeflate(remote_no_context_takeover=True)
    assert forgetful.decode(first, True, None) == message
    with pytest.raises(ProtocolError):
        forgetful.decode(second, True, None)


def test_empty_and_tiny_messages():
    """Empty and one-byte messages survive compression in both modes."""
    for takeover in (True, False):
        sender = PerMessageDeflate(local_no_context_takeover=not takeover)
        receiver = PerMessageDeflate(remote_no_context_takeover=not takeover)
        for message in (b"", b"x", b"", text_payload(300), b""):
            assert receiver.decode(sender.encode(message), True, None) == message


def test_window_8_compresses_with_9():
    """zlib cannot compress with an 8-bit window: 9 is used, whose matches never reach past 250 bytes."""
    ext = PerMessageDeflate(local_max_window_bits=8)
    assert ext.compress_bits == 9
    with pytest.raises((ValueError, zlib.error)):
        zlib.compressobj(6, zlib.DEFLATED, -8)
    # Random 256-byte blocks, each repeated at distance 260: a 512-byte window
    # could match them, but zlib keeps to 250, so a 256-byte window inflates it.
    rng = random.Random(8)
    message = b"".join(block + bytes(4) + block for block in (bytes(rng.getrandbits(8) for _ in range(256)) for _ in range(8)))
    assert PerMessageDeflate(remote_max_window_bits=8).decode(ext.encode(message), True, None) == message


def test_window_8_inflates_a_256_byte_distance():
    """Inflating with the agreed 8 bits accepts a match 256 bytes back, within a message and across messages."""
    rng = random.Random(256)
    block = bytes(rng.getrandbits(8) for _ in range(256))
    receiver = PerMessageDeflate(remote_max_window_bits=8)
    assert receiver.decompress_bits == 8
    assert receiver.decode(fixed_huffman_deflate(block + block, 8), True, None) == block + block
    second = fixed_huffman_deflate(block, 8, history=block + block)  # one match, 256 bytes back
    assert len(second) < 10
    assert receiver.decode(second, True, None) == block


def test_fragmented_decode():
    """A compressed message split anywhere across frames inflates to the same bytes."""
    message = text_payload(5000)
    data = PerMessageDeflate().encode(message)
    for cuts in ([1], [len(data) // 2], [0, 1, 2, 3], list(range(0, len(data), 7))):
        receiver = PerMessageDeflate()
        pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
        out = b"".join(receiver.decode(p, i == len(pieces) - 1, None) for i, p in enumerate(pieces))
        assert out == message


def test_invalid_compressed_data_is_a_protocol_error():
    """Bytes that are not DEFLATE fail with 1002."""
    with pytest.raises(ProtocolError) as info:
        PerMessageDeflate().decode(b"\xff\xff\xff\xff", True, None)
    assert info.value.code == 1002


def test_zip_bomb_is_stopped_without_allocating_it():
    """10 MB of zeros in ~10 KB, max_size 1 MiB: PayloadTooBig (1009), and memory stays near 1 MiB."""
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = bomb.compress(bytes(10_000_000)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    data = data[:-4]
    assert len(data) < 12_000
    receiver = Receiver(expect_masked=True, max_size=MiB, extension=PerMessageDeflate())
    wire = frame(BINARY, data, rsv=RSV1)
    tracemalloc.start()
    try:
        events = receiver.feed(wire)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (kind, error), = events
    assert kind is None and isinstance(error, PayloadTooBig) and error.code == 1009
    assert peak < 3 * MiB, f"inflating the bomb allocated {peak} bytes"


def test_a_compressor_kept_for_context_takeover_costs_about_38_kib():
    """What deflate.py says a connection with context takeover keeps: ~38 KiB of compressor, not zlib's
    default 262 KiB (its own formula: 2**(bits+2) + 2**(memLevel+9) bytes plus a few KiB of state)."""
    extensions = [PerMessageDeflate() for _ in range(20)]
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for extension in extensions:
            extension.encode(b"warm up")  # the compressor is made at the first message, then kept
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    each = (after - before) / len(extensions)
    assert 32 * 1024 <= each <= 44 * 1024, f"{each / 1024:.1f} KiB per compressor"


def test_zip_bomb_across_fragments():
    """The bound is on the whole message: fragments under max_size each, over it together, fail."""
    sender = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [sender.compress(bytes(400_000)) + sender.flush(zlib.Z_SYNC_FLUSH) for _ in range(3)]
    receiver = Receiver(expect_masked=True, max_size=MiB, extension=PerMessageDeflate())
    events = receiver.feed(frame(BINARY, parts[0], fin=False, rsv=RSV1) + frame(CONT, parts[1], fin=False))
    assert events == []
    (kind, error), = receiver.feed(frame(CONT, parts[2][:-4]))
    assert isinstance(error, PayloadTooBig)


def test_message_of_exactly_max_size_passes():
    """A compressed message that inflates to exactly max_size is accepted (the bound is not off by one)."""
    message = text_payload(1000)
    receiver = Receiver(expect_masked=True, max_size=1000, extension=PerMessageDeflate())
    assert receiver.feed(frame(TEXT, PerMessageDeflate().encode(message), rsv=RSV1)) == [(TEXT, message.decode())]
    receiver = Receiver(expect_masked=True, max_size=999, extension=PerMessageDeflate())
    (_, error), = receiver.feed(frame(TEXT, PerMessageDeflate().encode(message), rsv=RSV1))
    assert isinstance(error, PayloadTooBig)


def test_oversized_compressed_frame_fails_on_its_header():
    """A compressed frame far longer than max_size fails as soon as its header arrives, not after buffering it."""
    receiver = Receiver(expect_masked=True, max_size=MiB, extension=PerMessageDeflate())
    header, _ = rawws.build_header(BINARY, 100 * MiB, rsv=RSV1)
    (_, error), = receiver.feed(header + b"\x00" * 100)
    assert isinstance(error, PayloadTooBig)


@pytest.mark.parametrize(
    "wire, reason",
    [
        (frame(TEXT, b"\xf2\x48", fin=False, rsv=RSV1) + frame(CONT, b"\xcd\xc9\xc9\x07\x00", rsv=RSV1), "continuation"),
        (frame(PING, b"", rsv=RSV1), "reserved bits"),
        (frame(CLOSE, b"\x03\xe8", rsv=RSV1), "reserved bits"),
        (frame(TEXT, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=RSV2), "reserved bits"),
        (frame(TEXT, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=RSV1 | RSV3), "reserved bits"),
    ],
    ids=["rsv1-on-continuation", "rsv1-on-ping", "rsv1-on-close", "rsv2", "rsv3"],
)
def test_rsv_bits_where_deflate_forbids_them(wire, reason):
    """RFC 7692 §6: RSV1 only on the first frame of a data message; RSV2/3 stay reserved: 1002."""
    receiver = Receiver(expect_masked=True, extension=PerMessageDeflate())
    *_, (kind, error) = receiver.feed(wire)
    assert kind is None and error.code == 1002 and reason in str(error)


def test_rsv1_without_deflate_negotiated():
    """RSV1 when no extension was negotiated: 1002 (RFC 6455 §5.2)."""
    (kind, error), = Receiver(expect_masked=True).feed(frame(TEXT, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=RSV1))
    assert kind is None and error.code == 1002


def test_uncompressed_messages_still_allowed():
    """With deflate negotiated, a message without RSV1 is plain, and text is still UTF-8 checked."""
    receiver = Receiver(expect_masked=True, extension=PerMessageDeflate())
    assert receiver.feed(frame(TEXT, b"plain")) == [(TEXT, "plain")]
    compressed_bad_utf8 = PerMessageDeflate().encode(b"\xff\xfe")
    (kind, error), = receiver.feed(frame(TEXT, compressed_bad_utf8, rsv=RSV1))
    assert error.code == 1007

"""permessage-deflate (RFC 7692): common/deflate.py and where it plugs in.

Four groups:

* negotiation, sans-I/O: the header grammar (RFC 6455 §9.1), the server's
  choice among offers and its answer (RFC 7692 §7.1), the client's checks of
  that answer; then the same decisions through a real handshake;
* compression, sans-I/O: the RFC's own byte vectors (§7.2.3), context
  takeover, the zlib window quirks, the zip-bomb bound;
* conformance in the spirit of Autobahn 12.x/13.x: message sizes times
  parameter combinations, echoed by ``python3 -m common echo`` to a client
  over a raw socket that does permessage-deflate itself, with zlib or with a
  small fixed-Huffman DEFLATE encoder written here (so that the server
  inflates a stream that zlib's compressor did not make); and serve()
  against connect() in-process;
* protocol errors (RSV1 where it may not be, bad compressed data, bombs),
  the wire view and broadcast's encode-once groups.

Every wait is bounded (rawws.TIMEOUT for sockets, BOUND for asyncio).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import functools
import json
import logging
import os
import random
import socket
import tracemalloc
import zlib
from pathlib import Path

import pytest

from common import (
    ConnectionClosedError,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
    broadcast,
    connect,
)
from common import protocol as protocol_module
from common import deflate
from common.deflate import PerMessageDeflate, client_accept, client_offer, parse_extensions, server_negotiate
from common.protocol import Receiver

try:  # tests/ as a package or as a plain directory
    from . import rawws
    from .helpers import BOUND, echo, run, serving
except ImportError:
    import rawws
    from helpers import BOUND, echo, run, serving

REPO_ROOT = Path(__file__).resolve().parent.parent
TAIL = b"\x00\x00\xff\xff"
CONT, TEXT, BINARY, CLOSE, PING, PONG = rawws.CONT, rawws.TEXT, rawws.BINARY, rawws.CLOSE, rawws.PING, rawws.PONG
RSV1, RSV2, RSV3 = rawws.RSV1, rawws.RSV2, rawws.RSV3
MiB = 1 << 20


def threshold() -> int:
    return protocol_module.COMPRESSION_THRESHOLD


@functools.lru_cache(maxsize=64)
def text_payload(n: int, seed: int = 0) -> bytes:
    """n bytes of JSON-like telemetry: compressible, like the lab's messages."""
    rng = random.Random(seed)
    rows = (json.dumps({"t": round(1700000000 + i * 0.001, 3), "ch": i % 8, "v": round(rng.uniform(-9, 9), 4)}) for i in range(n // 30 + 2))
    return ", ".join(rows).encode()[:n]


@functools.lru_cache(maxsize=64)
def binary_payload(n: int, seed: int = 0) -> bytes:
    """n bytes, half random, half repeated: compresses somewhat."""
    rng = random.Random(seed)
    half = bytes(rng.getrandbits(8) for _ in range(min(n // 2, 4096)))
    return ((half + bytes(range(256)) * 16) * (n // (len(half) + 4096) + 1))[:n]


def raw_inflate(data: bytes, bits: int = 15) -> bytes:
    return zlib.decompressobj(-bits).decompress(data + TAIL)


# ============================================================ a DEFLATE encoder
# RFC 1951 with fixed Huffman codes (§3.2.6) and greedy LZ77 matching: slow
# and plain, but it is not zlib's compressor, and it can use a true 256-byte
# window, which zlib cannot.

_LENGTH_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
_LENGTH_EXTRA = [0] * 8 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 4 + [0]
_DIST_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073,
              4097, 6145, 8193, 12289, 16385, 24577]
_DIST_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]


class _Bits:
    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value: int, count: int) -> None:
        """Plain values and extra bits go least significant bit first."""
        self.acc |= value << self.n
        self.n += count
        while self.n >= 8:
            self.out.append(self.acc & 0xFF)
            self.acc >>= 8
            self.n -= 8

    def code(self, code: int, length: int) -> None:
        """Huffman codes go most significant bit first."""
        self.put(int(format(code, f"0{length}b")[::-1], 2), length)

    def symbol(self, sym: int) -> None:
        if sym < 144:
            self.code(0x30 + sym, 8)
        elif sym < 256:
            self.code(0x190 + sym - 144, 9)
        elif sym < 280:
            self.code(sym - 256, 7)
        else:
            self.code(0xC0 + sym - 280, 8)


def fixed_huffman_deflate(data: bytes, window_bits: int = 15, history: bytes = b"", *, final: bool = False) -> bytes:
    """``data`` as one fixed-Huffman block, as a permessage-deflate payload.

    Matches reach up to 2**window_bits bytes back, into ``history`` too (the
    earlier messages, for context takeover). The block is followed by the
    empty stored block of a sync flush without its last four bytes (RFC 7692
    §7.2.1), or with ``final`` it is itself the last block (BFINAL, §7.2.3.4).
    """
    window = 1 << window_bits
    buf = history + data
    heads: dict[bytes, list[int]] = {}
    for i in range(max(0, len(history) - window), max(0, len(history) - 2)):
        heads.setdefault(buf[i:i + 3], []).append(i)
    w = _Bits()
    w.put(1 if final else 0, 1)  # BFINAL
    w.put(1, 2)  # BTYPE 01: fixed Huffman codes
    pos = len(history)
    while pos < len(buf):
        best_len = best_dist = 0
        for cand in reversed(heads.get(buf[pos:pos + 3], [])[-32:]):
            dist = pos - cand
            if dist > window:
                break
            length = 0
            while length < 258 and pos + length < len(buf) and buf[cand + length] == buf[pos + length]:
                length += 1
            if length > best_len:
                best_len, best_dist = length, dist
        step = best_len if best_len >= 3 else 1
        if step == 1:
            w.symbol(buf[pos])
        else:
            i = bisect.bisect_right(_LENGTH_BASE, best_len) - 1
            w.symbol(257 + i)
            w.put(best_len - _LENGTH_BASE[i], _LENGTH_EXTRA[i])
            j = bisect.bisect_right(_DIST_BASE, best_dist) - 1
            w.code(j, 5)
            w.put(best_dist - _DIST_BASE[j], _DIST_EXTRA[j])
        for k in range(pos, pos + step):
            heads.setdefault(buf[k:k + 3], []).append(k)
        pos += step
    w.symbol(256)  # end of block
    if not final:
        w.put(0, 3)  # an empty stored block: BFINAL 0, BTYPE 00 ...
    if w.n:
        w.put(0, 8 - w.n)  # ... aligned to a byte; its 00 00 ff ff is left out
    return bytes(w.out)


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


def agreed(extension: PerMessageDeflate) -> tuple:
    return (
        extension.local_no_context_takeover,
        extension.remote_no_context_takeover,
        extension.local_max_window_bits,
        extension.remote_max_window_bits,
    )


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


MALFORMED_OFFERS = [
    ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", "duplicate"),
    ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", "duplicate"),
    ("permessage-deflate; server_max_window_bits=10; server_max_window_bits=10", "duplicate"),
    ("permessage-deflate; client_max_window_bits; client_max_window_bits=10", "duplicate"),
    ("permessage-deflate; client_max_window_bits=10; CLIENT_MAX_WINDOW_BITS=10", "duplicate"),
    ("permessage-deflate; client_max_window_bits=7", "not a window size"),
    ("permessage-deflate; client_max_window_bits=16", "not a window size"),
    ("permessage-deflate; client_max_window_bits=abc", "not a window size"),
    ("permessage-deflate; client_max_window_bits=09", "not a window size"),
    ("permessage-deflate; client_max_window_bits=+9", "not a window size"),
    ('permessage-deflate; client_max_window_bits="16"', "not a window size"),
    ("permessage-deflate; server_max_window_bits=7", "not a window size"),
    ("permessage-deflate; server_max_window_bits=16", "not a window size"),
    ("permessage-deflate; server_max_window_bits", "needs a value"),
    ("permessage-deflate; server_no_context_takeover=1", "takes no value"),
    ('permessage-deflate; client_no_context_takeover="true"', "takes no value"),
    ("permessage-deflate; foo", "unknown parameter"),
    ("permessage-deflate; max_window_bits=10", "unknown parameter"),
    ("permessage-deflate, permessage-deflate; client_max_window_bits=20", "not a window size"),
]


@pytest.mark.parametrize("offer, message", MALFORMED_OFFERS)
def test_server_refuses_malformed_offers(offer, message):
    """Duplicate, unknown or out-of-range parameters: NegotiationError (HTTP 400) naming the problem.

    Every offer is checked, even after an acceptable one (the last case).
    """
    with pytest.raises(NegotiationError, match=message) as info:
        server_negotiate([offer])
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


@pytest.mark.parametrize("offer, message", MALFORMED_OFFERS[:3] + MALFORMED_OFFERS[5:8] + MALFORMED_OFFERS[14:17])
def test_server_answers_400_to_malformed_offers(offer, message):
    """A malformed offer gets HTTP 400 whose body says what is wrong; the server goes on serving."""

    async def main():
        async with serving() as server:
            status, _, body = await asyncio.to_thread(http_get, server.port, offer)
            assert status == 400
            assert message in body.decode()
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


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    return rawws.build_frame(opcode, payload, fin=fin, rsv=rsv)


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


# ================================================== against python3 -m common echo


@pytest.fixture(scope="module")
def small_echo_server():
    """The echo server with --max-size 1 MiB, for the bombs (``echo_server``, with the defaults, is in conftest.py)."""
    with rawws.EchoServer(REPO_ROOT, ["--max-size", str(MiB)]) as server:
        yield server


class DeflateClient:
    """A client over a raw socket doing permessage-deflate itself (RFC 7692 by hand).

    ``encoder`` is "zlib" (zlib with other settings than the server's: level
    9, memLevel 9) or "fixed" (the fixed-Huffman encoder above). Server
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

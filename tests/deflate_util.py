"""What both permessage-deflate test files use: payloads, frames, a DEFLATE encoder of our own.

* ``text_payload`` and ``binary_payload``: reproducible messages that compress
  like the lab's telemetry, or only somewhat;
* ``fixed_huffman_deflate``: RFC 1951 with fixed Huffman codes, written here so
  that the server inflates a stream that zlib's compressor did not make (and
  with a true 256-byte window, which zlib cannot make);
* ``frame``: a client frame (masked) as raw bytes; ``agreed``: the parameters
  an extension ended up with; ``MALFORMED_OFFERS``: offers the server declines.
"""

from __future__ import annotations

import bisect
import functools
import json
import random

from common import protocol as protocol_module
from common.deflate import PerMessageDeflate

try:                                    # tests/ as a package or as a plain directory
    from . import rawws
except ImportError:
    import rawws

TAIL = b"\x00\x00\xff\xff"              # RFC 7692 §7.2.1: what a sync flush ends with, left out on the wire
CONT, TEXT, BINARY, CLOSE, PING, PONG = rawws.CONT, rawws.TEXT, rawws.BINARY, rawws.CLOSE, rawws.PING, rawws.PONG
RSV1, RSV2, RSV3 = rawws.RSV1, rawws.RSV2, rawws.RSV3
MiB = 1 << 20


def threshold() -> int:
    """The size from which common compresses a message (common.protocol.COMPRESSION_THRESHOLD)."""
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


def agreed(extension: PerMessageDeflate) -> tuple:
    """(local no context takeover, remote no context takeover, local window bits, remote window bits)."""
    return (
        extension.local_no_context_takeover,
        extension.remote_no_context_takeover,
        extension.local_max_window_bits,
        extension.remote_max_window_bits,
    )


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """One client frame, masked with a random key, as raw bytes (what a server's Receiver expects)."""
    return rawws.build_frame(opcode, payload, fin=fin, rsv=rsv)


# Offers the server declines (RFC 7692 §7), each with words the reason for declining must contain.
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

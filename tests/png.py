"""Check screenshots without an imaging library: a PNG's size, and how many colours it shows.

The browser tests save one screenshot per stage and check that it is a real
render, not a blank page: the viewport's size, and more than a handful of
distinct colours (text is antialiased: hundreds of colours in its first rows).
"""

from __future__ import annotations

import struct
import zlib

__all__ = ["png_size", "png_distinct_colors"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """Split a PNG into (type, data) chunks, checking each CRC."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG: bad signature")
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset < len(png):
        length, kind = struct.unpack(">I4s", png[offset:offset + 8])
        data = png[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length:offset + 12 + length])
        if zlib.crc32(kind + data) != crc:
            raise ValueError(f"PNG chunk {kind!r} has a bad CRC")
        chunks.append((kind, data))
        offset += 12 + length
        if kind == b"IEND":
            break
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise ValueError("PNG must start with IHDR and end with IEND")
    return chunks


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking signature and CRCs."""
    width, height = struct.unpack(">II", _chunks(png)[0][1][:8])
    return width, height


def png_distinct_colors(png: bytes, enough: int = 64) -> int:
    """Count distinct pixel values, decoding rows until ``enough`` are found.

    A blank render is one colour; a page with text has hundreds (antialiasing)
    within its first rows, so this stops early on any real page. Supports the
    8-bit truecolour and greyscale PNGs (with or without alpha) that the browsers write.
    """
    chunks = _chunks(png)
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color_type)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {color_type}, interlace {interlace}")
    raw = zlib.decompress(b"".join(data for kind, data in chunks if kind == b"IDAT"))
    stride = width * channels
    if len(raw) != height * (stride + 1):
        raise ValueError(f"PNG data is {len(raw)} bytes, expected {height * (stride + 1)}")
    seen: set[bytes] = set()
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 2 and not any(row):              # Up with no change: the row above again
            continue
        _unfilter(kind, row, previous, channels)
        seen.update(bytes(row[x:x + channels]) for x in range(0, stride, channels))
        if len(seen) >= enough:
            break
        previous = row
    return len(seen)


def _unfilter(kind: int, row: bytearray, prior: bytearray, bpp: int) -> None:
    """Undo one row's filter in place (PNG spec §9.2)."""
    n = len(row)
    if kind == 0:
        return
    # Fast path for flat areas (a blank page is all flat): zero deltas.
    if kind == 1 and not any(memoryview(row)[bpp:]):  # Sub, unchanged: the first pixel repeated
        row[:] = bytes(row[:bpp]) * (n // bpp)
        return
    if kind == 1:                                   # Sub
        for i in range(bpp, n):
            row[i] = (row[i] + row[i - bpp]) & 0xFF
    elif kind == 2:                                 # Up
        for i in range(n):
            row[i] = (row[i] + prior[i]) & 0xFF
    elif kind == 3:                                 # Average
        for i in range(n):
            left = row[i - bpp] if i >= bpp else 0
            row[i] = (row[i] + ((left + prior[i]) >> 1)) & 0xFF
    elif kind == 4:                                 # Paeth
        for i in range(n):
            a = row[i - bpp] if i >= bpp else 0
            b = prior[i]
            c = prior[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            predictor = a if pa <= pb and pa <= pc else b if pb <= pc else c
            row[i] = (row[i] + predictor) & 0xFF
    else:
        raise ValueError(f"bad PNG filter type {kind}")

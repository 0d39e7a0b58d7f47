"""The streams floor: the least a WebSocket echo on asyncio streams can do, in one task.

    python3 bench/servers/streams_echo.py PORT

One task per connection reads the opening handshake, answers it, then reads each frame
with ``readexactly`` (header, length, masking key, payload), unmasks it and writes the
echo, all in the same task: no reading task apart from the handler, no queue, no close
handshake beyond echoing the close frame, no validation (no UTF-8 check, no limits, no
fragmentation, no pings). Not a server to use: the floor that a library on asyncio
streams (common/) is measured against in the small-echo and pipelined scenarios, where
the plain TCP echo (tcp_echo.py) has no WebSocket at all.
"""

import asyncio
import base64
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/

import benchproto  # noqa: E402

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

benchproto.settle_allocator()


def accept_key(head):
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            return base64.b64encode(hashlib.sha1(value.strip() + GUID).digest())
    raise ValueError("no Sec-WebSocket-Key")


def unmask(payload, key):
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(n, "little")


def header(opcode, n):
    if n < 126:
        return bytes((0x80 | opcode, n))
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")


async def handle(reader, writer):
    readexactly = reader.readexactly
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(head) + b"\r\n\r\n"
        )
        while True:
            first, second = await readexactly(2)
            n = second & 0x7F
            if n == 126:
                n = int.from_bytes(await readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await readexactly(8), "big")
            key = await readexactly(4)
            payload = unmask(await readexactly(n), key)
            opcode = first & 0x0F
            writer.write(header(opcode, n) + payload)
            if opcode == 0x8:
                break
            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


if __name__ == "__main__":
    benchproto.serve_streams(handle, int(sys.argv[1]))

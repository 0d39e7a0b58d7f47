"""The floor: a plain asyncio-streams TCP echo server, no WebSocket at all.

    python3 bench/servers/tcp_echo.py PORT

The load generator sends it the very bytes it would send a WebSocket server (masked frames)
and expects them back verbatim, so the difference between this column and a WebSocket
column is the cost of the WebSocket layer (parsing, unmasking, framing, the handler).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/

import benchproto  # noqa: E402

benchproto.settle_allocator()


async def handle(reader, writer):
    try:
        while data := await reader.read(1 << 20):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


if __name__ == "__main__":
    benchproto.serve_streams(handle, int(sys.argv[1]))

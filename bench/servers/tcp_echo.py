"""The floor: a plain asyncio-streams TCP echo server, no WebSocket at all.

    python3 bench/servers/tcp_echo.py PORT

The load generator sends it the very bytes it would send a WebSocket server (masked frames)
and expects them back verbatim, so the difference between this column and a WebSocket
column is the cost of the WebSocket layer (parsing, unmasking, framing, the handler).
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/

import benchproto  # noqa: E402

# As common/connection.py does at import: free one 512 KiB block, so that glibc's
# malloc stops serving asyncio's 256 KiB read buffers with mmap (see bench/README.md,
# "The allocator"); without it the floor pays three system calls per read that the
# servers it is compared with do not.
bytes(2 * 262144)


async def handle(reader, writer):
    try:
        while data := await reader.read(1 << 20):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        benchproto.announce_ready(server.sockets[0].getsockname()[1])
        await server.serve_forever()


if __name__ == "__main__":
    benchproto.raise_nofile_limit()
    asyncio.run(main(int(sys.argv[1])))

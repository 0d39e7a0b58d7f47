"""Benchmark server on the `websockets` library: echo, plus the broadcast trigger (see bench/benchproto.py).

    python3 bench/servers/websockets_echo.py PORT [--deflate]

An optional comparison column: nothing in the project depends on websockets.  Uses the
asyncio API of websockets >= 13 (websockets.asyncio.server), and the legacy API before
that.  Same settings as the common/ server: compression off unless --deflate, keepalive
pings off, max_size large enough for 1 MiB messages.
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/

import benchproto  # noqa: E402

try:
    import websockets  # noqa: E402
except ImportError as exc:
    benchproto.announce_skip(f"websockets is not installed ({exc}); python3 -m pip install websockets")

try:
    from websockets.asyncio.server import broadcast, serve  # websockets >= 13

    def connections_of(server):
        return server.connections
except ImportError:
    from websockets import broadcast, serve  # legacy API

    def connections_of(server):
        return server.websockets


async def main(port, deflate):

    async def handler(ws):
        try:
            async for message in ws:
                n = benchproto.parse_go(message)
                if n is None:
                    await ws.send(message)
                else:
                    await benchproto.run_broadcast(lambda m: broadcast(connections_of(server), m), n)
        except websockets.ConnectionClosed:
            pass  # a client that vanishes is not a server error

    async with serve(
        handler, "127.0.0.1", port,
        max_size=benchproto.MAX_SIZE,
        ping_interval=None,
        compression="deflate" if deflate else None,
    ) as server:
        benchproto.announce_ready(server.sockets[0].getsockname()[1])
        await server.serve_forever()


if __name__ == "__main__":
    benchproto.raise_nofile_limit()
    asyncio.run(main(int(sys.argv[1]), "--deflate" in sys.argv[2:]))

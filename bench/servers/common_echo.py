"""Benchmark server on common/: echo, plus the broadcast trigger (see bench/benchproto.py).

    python3 bench/servers/common_echo.py PORT [--deflate]

Prints ``READY <port>`` once listening.  Compression is off unless --deflate is given, in
which case the server offers permessage-deflate (compression="deflate").  Keepalive pings
are disabled so that long idle or broadcast runs measure only the workload.
"""

import asyncio
import os
import sys

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# common/ from this repository, or from the checkout that run.py --baseline names; and bench/
sys.path[:0] = [os.environ.get("BENCH_COMMON_ROOT") or os.path.dirname(BENCH), BENCH]

import benchproto  # noqa: E402

try:
    import common  # noqa: E402
except ImportError as exc:
    benchproto.announce_skip(f"common/ cannot be imported: {exc}")


async def main(port, deflate):

    async def handler(ws):
        try:
            async for message in ws:
                n = benchproto.parse_go(message)
                if n is None:
                    await ws.send(message)
                else:
                    await benchproto.run_broadcast(lambda m: common.broadcast(server.connections, m), n)
        except common.ConnectionClosed:
            pass  # a client that vanishes is not a server error

    try:
        serving = common.serve(
            handler, "127.0.0.1", port,
            max_size=benchproto.MAX_SIZE,
            ping_interval=None,
            compression="deflate" if deflate else None,
        )
    except (TypeError, ValueError, NotImplementedError) as exc:
        if deflate:
            benchproto.announce_skip(f"common.serve(compression='deflate') is not supported: {exc}")
        raise
    async with serving as server:
        benchproto.announce_ready(server.sockets[0].getsockname()[1])
        await server.serve_forever()


if __name__ == "__main__":
    benchproto.raise_nofile_limit()
    asyncio.run(main(int(sys.argv[1]), "--deflate" in sys.argv[2:]))

"""Where an idle connection's memory goes: tracemalloc's breakdown, per connection.

    python3 bench/idle_memory.py [--connections N] [--root DIR] [--depth D] [--min B]

Starts the benchmark's echo server (bench/servers/common_echo.py, on the common/ of
this checkout or of ``--root DIR``) under ``python3 -X tracemalloc=D``, opens N idle
WebSocket connections to it from plain sockets in this process, and has the server
compare a tracemalloc snapshot taken before them with one taken after: each line
allocated in the server, divided by N, grouped by the source line that allocated it
(its innermost frame, or the D innermost with ``--depth``). The sum is what one
idle connection holds in Python objects; ``bench/run.py``'s memory scenario measures
the whole process's RSS instead, which adds the kernel's socket buffers and the
allocator's slack.

The server gets its commands on standard input (``snapshot``, ``compare N D``), so
that it measures itself at rest, after every handshake has ended.
"""

import argparse
import base64
import os
import socket
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)

SERVER_SIDE = r'''
import asyncio, gc, runpy, sys, tracemalloc

async def commands():
    loop = asyncio.get_running_loop()
    before = None
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        words = line.split()
        # A few turns of the loop let every handshake's leftovers go first.
        for _ in range(5):
            await asyncio.sleep(0.05)
        gc.collect()
        if words[0] == "snapshot":
            before = tracemalloc.take_snapshot()
            print("OK", flush=True)
        else:
            n, depth = int(words[1]), int(words[2])
            after = tracemalloc.take_snapshot()
            keep = [tracemalloc.Filter(False, tracemalloc.__file__)]
            stats = after.filter_traces(keep).compare_to(before.filter_traces(keep), "traceback")
            rows = {}
            for stat in stats:
                frames = list(stat.traceback)[::-1][:depth]  # innermost first
                key = " <- ".join(f"{frame.filename}:{frame.lineno}" for frame in frames)
                size, count = rows.get(key, (0, 0))
                rows[key] = (size + stat.size_diff, count + stat.count_diff)
            for key, (size, count) in sorted(rows.items(), key=lambda item: -item[1][0]):
                print(f"ROW {size / n:.1f} {count / n:.2f} {key}", flush=True)
            print("END", flush=True)

_main = runpy.run_path(sys.argv[1], run_name="bench_server")

async def main():
    server = asyncio.get_running_loop().create_task(_main["main"](0, False))  # held: the loop holds tasks weakly
    await commands()
    server.cancel()

asyncio.run(main())
'''


def handshake(port: int) -> socket.socket:
    """An opening handshake from a plain socket; the socket stays open, idle."""
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit(f"the server closed the connection during the handshake: {response!r}")
        response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"handshake refused: {response.splitlines()[0]!r}")
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=500, help="idle connections (default 500)")
    parser.add_argument("--root", default=REPO, help="the checkout whose common/ is measured (default: this one)")
    parser.add_argument("--depth", type=int, default=1, help="frames per row (default 1: the allocating line)")
    parser.add_argument("--min", type=float, default=4.0, help="hide rows under this many bytes per connection")
    opts = parser.parse_args()

    env = dict(os.environ, BENCH_COMMON_ROOT=os.path.abspath(opts.root))
    server = subprocess.Popen(
        [sys.executable, "-X", f"tracemalloc={max(opts.depth, 1) + 8}", "-c", SERVER_SIDE,
         os.path.join(BENCH, "servers", "common_echo.py")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    assert server.stdin is not None and server.stdout is not None
    sockets = []
    try:
        ready = server.stdout.readline().split()
        if ready[:1] != ["READY"]:
            raise SystemExit(f"the server did not start: {ready}")
        port = int(ready[1])
        sockets.append(handshake(port))  # a first connection warms up every code path
        server.stdin.write("snapshot\n")
        server.stdin.flush()
        server.stdout.readline()
        sockets += [handshake(port) for _ in range(opts.connections)]
        server.stdin.write(f"compare {opts.connections} {opts.depth}\n")
        server.stdin.flush()
        total = 0.0
        print(f"common/ of {os.path.abspath(opts.root)}: bytes per idle connection, by allocating line")
        for line in iter(server.stdout.readline, "END\n"):
            _, size, count, where = line.rstrip("\n").split(" ", 3)
            total += float(size)
            if abs(float(size)) >= opts.min:
                print(f"{float(size):8.1f} B {float(count):6.2f} blocks  {where.replace(opts.root, '').replace(sys.prefix, '<python>')}")
        print(f"{total:8.1f} B in all ({total / 1024:.2f} KiB) over {opts.connections} connections")
    finally:
        for sock in sockets:
            sock.close()
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()

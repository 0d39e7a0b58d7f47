"""Conventions shared by the benchmark servers (bench/servers/) and the load generator.

Kept in one place so that every server does exactly the same work and the load generator
can check the result byte for byte.

* A server prints one line, ``READY <port>``, once it listens (port 0 = pick a free one),
  or ``SKIP <reason>`` and exits with status SKIP_EXIT if it cannot offer what was asked
  (for example a library without compression).
* Any message is echoed back unchanged (text as text, binary as binary), except the
  broadcast trigger: a text message ``GO <n>`` makes the server call its library's
  broadcast n times, with ``broadcast_message(i)`` for i = 0 .. n-1, yielding to the event
  loop (``await asyncio.sleep(0)``) after each call, so that reads, writes and other
  connections make progress exactly as they would in a real chat-style server.
"""

import resource

GO_PREFIX = "GO "
BROADCAST_SIZE = 64
MAX_SIZE = 2**22  # generous: the large scenario sends 1 MiB (2**20 bytes) messages
SKIP_EXIT = 3


def broadcast_message(i):
    """The i-th broadcast message: 64 ASCII characters, unique per i within a burst."""
    return f"broadcast {i:08d} ".ljust(BROADCAST_SIZE, "x")


def parse_go(message):
    """Return n if message is the broadcast trigger ``GO <n>``, else None."""
    if isinstance(message, str) and message.startswith(GO_PREFIX):
        return int(message[len(GO_PREFIX):])
    return None


async def run_broadcast(broadcast_one, n):
    """The broadcast workload: n calls of broadcast_one(msg), yielding after each one."""
    import asyncio  # here, not at the top: the load generator imports this module and never needs asyncio

    for i in range(n):
        broadcast_one(broadcast_message(i))
        await asyncio.sleep(0)


def raise_nofile_limit():
    """Lift the soft RLIMIT_NOFILE to the hard limit: the memory scenario opens thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def settle_allocator():
    """Free one 512 KiB block, as common/connection.py does at import, so that glibc's
    malloc stops serving asyncio's 256 KiB read buffers with mmap (bench/README.md, "The
    allocator"): without it a floor pays three system calls per read that the servers it
    is compared with do not."""
    bytes(2 * 262144)


def serve_streams(handle, port):
    """Serve ``handle(reader, writer)`` with asyncio.start_server on 127.0.0.1:PORT,
    announce READY, and run until killed: the floors' main."""
    import asyncio  # here, as in run_broadcast: the load generator never needs it

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            announce_ready(server.sockets[0].getsockname()[1])
            await server.serve_forever()

    raise_nofile_limit()
    asyncio.run(main())


def announce_ready(port):
    print(f"READY {port}", flush=True)


def announce_skip(reason):
    print(f"SKIP {reason}", flush=True)
    raise SystemExit(SKIP_EXIT)

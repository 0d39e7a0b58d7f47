"""common's client and server against each other, in-process, on 127.0.0.1."""

import asyncio
import contextlib
import logging
import os
import subprocess
import sys

import pytest

from common import (
    CloseCode,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidStatus,
    State,
    broadcast,
    connect,
    serve,
)

try:                                    # tests/ as a package or as a plain directory
    from .helpers import BOUND, echo, run, serving, wait_until
except ImportError:
    from helpers import BOUND, echo, run, serving, wait_until


async def open_raw_websocket(port, wait_for_answer=True):
    """A client on a bare TCP connection that sends a valid opening handshake,
    for tests that then write frames byte by byte (or nothing at all)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    if wait_for_answer:
        await reader.readuntil(b"\r\n\r\n")
    return reader, writer


def test_echo_text_binary_and_fragmented():
    """Text stays str, binary stays bytes, a fragmented send arrives whole."""

    async def main():
        async with serving() as srv, connect(srv.url + "path?q=1") as ws:
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\xff")
            assert await ws.recv() == b"\x00\xff"
            await ws.send(["frag", "ment", "ed"])
            assert await ws.recv() == "fragmented"
            await ws.send([b"a", b"b"])
            assert await ws.recv() == b"ab"

    run(main())


def test_handler_sees_path_headers_and_address():
    """The handler gets the request's path, headers and the peer's address."""
    seen = {}

    async def handler(ws):
        seen.update(path=ws.path, host=ws.request_headers["Host"], peer=ws.remote_address[0])
        await ws.send("ok")

    async def main():
        async with serving(handler) as srv, connect(srv.url + "a/b?c=d") as ws:
            assert await ws.recv() == "ok"
        assert seen == {"path": "/a/b?c=d", "host": f"127.0.0.1:{srv.port}", "peer": "127.0.0.1"}

    run(main())


def test_sixteen_mib_messages_both_ways():
    """Large messages (conformance suites send 16 MiB) survive the round trip."""
    big = bytes(range(256)) * (16 * 4096)

    async def main():
        async with serving(max_size=2**25) as srv, connect(srv.url, max_size=2**25) as ws:
            await ws.send(big)
            assert await ws.recv() == big
            await ws.send(big.decode("latin-1"))
            assert await ws.recv() == big.decode("latin-1")

    run(main())


def test_concurrent_senders_do_not_interleave_frames():
    """Several tasks sending at once each get their messages through intact."""

    async def main():
        async with serving(max_queue=1024) as srv, connect(srv.url, max_queue=1024) as ws:
            async def sender(n):
                for i in range(50):
                    await ws.send(f"{n}:{i}:" + "x" * (i * 100))

            await asyncio.gather(*(sender(n) for n in range(4)))
            got = [await ws.recv() for _ in range(200)]
            for n in range(4):
                assert [m.split(":")[1] for m in got if m.startswith(f"{n}:")] == [str(i) for i in range(50)]

    run(main())


@pytest.mark.parametrize("code, reason", [(1000, "bye"), (1001, ""), (4000, "app")])
def test_client_closes(code, reason):
    """§7: the server sees the client's code; the client's close completes."""
    async def main():
        done = asyncio.get_running_loop().create_future()

        async def handler(ws):
            with contextlib.suppress(ConnectionClosedError):
                async for _ in ws:
                    pass
            done.set_result((ws.close_code, ws.close_reason))

        async with serving(handler) as srv:
            ws = await connect(srv.url)
            await ws.close(code, reason)
            assert ws.state is State.CLOSED and ws.close_code == code
            assert await asyncio.wait_for(done, BOUND) == (code, reason)

    run(main())


def test_server_closes_and_client_iteration_ends_quietly():
    """`async for` ends without an exception on 1000 from the server."""

    async def handler(ws):
        await ws.send("one")
        await ws.close(1000, "done")

    async def main():
        async with serving(handler) as srv, connect(srv.url) as ws:
            assert [m async for m in ws] == ["one"]
            assert (ws.close_code, ws.close_reason) == (1000, "done")
            with pytest.raises(ConnectionClosedOK):
                await ws.send("late")

    run(main())


def test_error_close_raises_connection_closed_error():
    """A close with an error code ends iteration with ConnectionClosedError."""

    async def handler(ws):
        await ws.close(4001, "nope")

    async def main():
        async with serving(handler) as srv, connect(srv.url) as ws:
            with pytest.raises(ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.code == 4001 and "4001" in str(info.value)

    run(main())


def test_handler_that_returns_closes_with_1000():
    async def main():
        async with serving(lambda ws: asyncio.sleep(0)) as srv, connect(srv.url) as ws:
            with pytest.raises(ConnectionClosedOK):
                await ws.recv()
            assert ws.close_code == 1000

    run(main())


def test_handler_error_is_logged_closes_1011_and_server_keeps_serving(caplog):
    """A crashing handler costs its own connection only (1011), with a log entry."""

    async def handler(ws):
        message = await ws.recv()
        if message == "crash":
            raise RuntimeError("boom")
        await ws.send(message)

    async def main():
        async with serving(handler) as srv:
            async with connect(srv.url) as ws:
                await ws.send("crash")
                with pytest.raises(ConnectionClosedError):
                    await ws.recv()
                assert ws.close_code == 1011
            async with connect(srv.url) as ws:
                await ws.send("still here")
                assert await ws.recv() == "still here"

    with caplog.at_level(logging.ERROR, logger="common"):
        run(main())
    assert any("boom" in (r.exc_text or "") or r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


def test_server_close_sends_1001_and_waits_for_handlers():
    """Shutdown closes every connection with 1001 (going away) and ends handlers."""
    finished = []

    async def handler(ws):
        try:
            await ws.recv()
        finally:
            finished.append(ws.close_code)

    async def main():
        async with serving(handler) as srv:
            clients = [await connect(srv.url) for _ in range(3)]
            while len(srv.connections) < 3:
                await asyncio.sleep(0)  # yield until the handlers registered
        # Leaving `async with` closed the server and waited for the handlers.
        assert finished == [1001, 1001, 1001]
        for ws in clients:
            with pytest.raises(ConnectionClosedOK):
                await ws.recv()
            assert ws.close_code == 1001

    run(main())


def test_ping_resolves_with_the_round_trip_time():
    """§5.5.2: the peer answers a ping with a pong carrying the same data."""

    async def main():
        async with serving() as srv, connect(srv.url) as ws:
            waiter = await ws.ping(b"data")
            latency = await asyncio.wait_for(waiter, BOUND)
            assert 0 <= latency < BOUND

    run(main())


def test_keepalive_closes_1011_when_pongs_stop():
    """A peer that stops answering pings is closed with 1011 after ping_timeout."""

    async def main():
        done = asyncio.get_running_loop().create_future()

        async def handler(ws):
            with contextlib.suppress(ConnectionClosedError):
                await ws.recv()
            done.set_result(ws.close_sent.code)

        async with serving(handler, ping_interval=0.05, ping_timeout=0.05, close_timeout=0.2) as srv:
            reader, writer = await open_raw_websocket(srv.port, wait_for_answer=False)
            # This peer reads nothing and answers nothing: it has vanished.
            assert await asyncio.wait_for(done, BOUND) == CloseCode.INTERNAL_ERROR
            writer.close()

    run(main())


def test_keepalive_does_not_blame_the_peer_for_our_own_backlog():
    """A slow handler whose full queue pauses reading keeps a peer that answers every ping.

    The client sends 600 messages in one go and answers each ping at once, but
    its pongs wait behind messages the server has not read yet (max_queue=4,
    2 ms of work per message, 12 times ping_timeout in all). Every message is
    handled, in order, and the client closes normally: no 1011.
    """
    count = 600

    async def main():
        handled = []

        async def handler(ws):
            async for message in ws:
                await asyncio.sleep(0.002)          # the application's work on each message
                handled.append(message)
                if len(handled) == count:
                    await ws.send(f"handled {len(handled)}")

        async with serving(handler, ping_interval=0.1, ping_timeout=0.1, max_queue=4) as srv:
            async with connect(srv.url, ping_interval=None) as ws:
                for i in range(count):
                    await ws.send(f"message {i}")
                assert await asyncio.wait_for(ws.recv(), 4 * BOUND) == f"handled {count}"
            assert ws.close_rcvd is not None and ws.close_rcvd.code == CloseCode.NORMAL_CLOSURE
        assert handled == [f"message {i}" for i in range(count)]

    run(main(), bound=8 * BOUND)


def test_after_our_close_what_is_delivered_has_no_gap():
    """Messages that arrive after our close frame are dropped while the queue
    is full; once one was dropped, no later one is delivered either, so the
    handler never sees message 6 right after message 2, as if 3 to 5 had
    never been sent."""
    import rawws

    async def main():
        got = []

        async def handler(ws):
            got.append(await ws.recv())                 # m0; m1 and m2 fill the queue (max_queue=2)
            closing = asyncio.create_task(ws.close())   # our close: m3 to m5 find the queue full
            await asyncio.sleep(0)                      # let close() send its frame
            async for message in ws:
                got.append(message)
            await closing

        def peer(port):
            ws = rawws.RawWS.connect("127.0.0.1", port)
            ws.send_raw(b"".join(rawws.build_frame(rawws.TEXT, f"m{i}".encode()) for i in range(6)))
            while ws.recv_frame().opcode != rawws.CLOSE:
                pass
            ws.send_frame(rawws.TEXT, b"m6")             # after the server's close: still queued if room
            ws.send_close(1000)
            ws.close_socket()

        async with serving(handler, max_queue=2) as srv:
            await asyncio.to_thread(peer, srv.port)
            await wait_until(lambda: not srv.connections)
        assert got == [f"m{i}" for i in range(len(got))] and len(got) >= 3

    run(main())


def test_a_full_queue_pauses_reading_once_per_batch_not_once_per_message():
    """Two marks: reading pauses when max_queue messages wait and resumes only
    once recv() has taken them down to a quarter of it, then parses a batch.
    Resuming for every message taken would pass every later message of a
    pipelining peer through a pause and a resume of its own."""

    async def main():
        count, max_queue = 2000, 16
        gate = asyncio.Event()
        longest = 0

        async def handler(ws):
            nonlocal longest
            await gate.wait()
            for _ in range(count):
                longest = max(longest, len(ws._messages))
                await ws.send(await ws.recv())

        async with serving(handler, max_queue=max_queue) as srv:
            reader, writer = await open_raw_websocket(srv.port)
            writer.write(b"".join(b"\x82\x84\x00\x00\x00\x00" + i.to_bytes(4, "big") for i in range(count)))
            conn = next(iter(srv.connections))
            await wait_until(lambda: conn._reading_paused)
            gate.set()
            for i in range(count):
                assert await asyncio.wait_for(reader.readexactly(6), BOUND) == b"\x82\x04" + i.to_bytes(4, "big")
            # Each pause lets at least max_queue - max_queue // 4 messages through.
            assert conn._pauses <= count // (max_queue - max_queue // 4) + 1
            assert longest == max_queue
            writer.close()

    run(main())


def test_a_handler_waiting_in_recv_reads_for_itself_without_a_reading_task():
    """While the handler waits in recv(), recv() reads the socket: an idle
    connection has one task, its handler's, not a reading task as well."""

    async def main():
        async with serving() as srv:
            baseline = len(asyncio.all_tasks())
            peers = [await open_raw_websocket(srv.port) for _ in range(20)]
            await wait_until(lambda: len(srv.connections) == 20 and all(c._receiving for c in srv.connections))
            assert len(asyncio.all_tasks()) - baseline == 20
            for reader, writer in peers:
                writer.write(b"\x81\x82\x00\x00\x00\x00hi")
                assert await asyncio.wait_for(reader.readexactly(4), BOUND) == b"\x81\x02hi"
                writer.close()

    run(main())


def test_a_handler_that_stops_reading_still_answers_pings_and_the_close():
    """Once the handler stops calling recv(), a reading task takes over:
    pings are answered and the peer's close is answered at once."""

    async def main():
        gate = asyncio.Event()

        async def handler(ws):
            await ws.recv()
            await gate.wait()

        async with serving(handler) as srv:
            reader, writer = await open_raw_websocket(srv.port)
            writer.write(b"\x81\x82\x00\x00\x00\x00hi" + b"\x89\x81\x00\x00\x00\x00p")
            assert await asyncio.wait_for(reader.readexactly(3), BOUND) == b"\x8a\x01p"
            writer.write(b"\x88\x82\x00\x00\x00\x00\x03\xe8")
            assert await asyncio.wait_for(reader.readexactly(4), BOUND) == b"\x88\x02\x03\xe8"
            gate.set()
            writer.close()

    run(main())


def test_slow_reader_applies_backpressure_instead_of_buffering():
    """When max_queue messages wait unread, the server stops reading the socket."""

    async def main():
        gate = asyncio.Event()

        async def handler(ws):
            await gate.wait()
            async for message in ws:
                await ws.send(message)

        chunk = os.urandom(65536)  # incompressible, whatever the extensions

        async with serving(handler, max_queue=4) as srv, connect(srv.url, write_limit=2**16) as ws:
            async def send_all():
                for _ in range(200):
                    await ws.send(chunk)

            sender = asyncio.create_task(send_all())
            # With nobody reading on the server, the client's send must block.
            await wait_until(lambda: ws.transport.get_write_buffer_size() > 2**16)
            assert not sender.done(), "the server kept reading without bound"
            conn = next(iter(srv.connections))
            assert len(conn._messages) <= 4
            gate.set()
            for _ in range(200):
                assert await asyncio.wait_for(ws.recv(), BOUND) == chunk
            await sender

    run(main())


def test_messages_before_a_protocol_error_are_answered_first():
    """Strict order: the echo of the good message precedes the 1002 close."""

    async def main():
        async with serving() as srv:
            reader, writer = await open_raw_websocket(srv.port)
            # A masked "hi" and, in the same write, a frame with reserved opcode 3.
            writer.write(b"\x81\x82\x00\x00\x00\x00hi" + b"\x83\x80\x00\x00\x00\x00")
            assert await asyncio.wait_for(reader.readexactly(4), BOUND) == b"\x81\x02hi"
            close = await asyncio.wait_for(reader.readexactly(4), BOUND)
            assert close[0] == 0x88 and close[2:4] == (1002).to_bytes(2, "big")
            writer.close()

    run(main())


def test_messages_before_the_peers_close_are_answered_first():
    """A message and a close in one write: the echo precedes the close reply (§7.1.5 leaves room for it)."""

    async def main():
        async with serving() as srv:
            reader, writer = await open_raw_websocket(srv.port)
            # A masked "hi", then a masked close 1000, in the same write.
            writer.write(b"\x81\x82\x00\x00\x00\x00hi" + b"\x88\x82\x00\x00\x00\x00\x03\xe8")
            assert await asyncio.wait_for(reader.readexactly(4), BOUND) == b"\x81\x02hi"
            assert await asyncio.wait_for(reader.readexactly(4), BOUND) == b"\x88\x02\x03\xe8"
            assert await asyncio.wait_for(reader.read(), BOUND) == b""  # then the server closes TCP
            writer.close()

    run(main())


def test_process_request_serves_plain_http_and_404():
    """process_request answers plain HTTP on the WebSocket port."""

    def process_request(path, headers):
        if path == "/hello":
            return 200, [("Content-Type", "text/plain")], b"hi"
        if path != "/ws":
            return 404, {}, b"not found"
        return None

    async def main():
        async with serving(process_request=process_request) as srv:
            port = srv.port
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), BOUND)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nhi")
            with pytest.raises(InvalidStatus) as info:
                await connect(srv.url + "other")
            assert info.value.status_code == 404
            assert info.value.body == b"not found" and "not found" in str(info.value)
            async with connect(srv.url + "ws") as ws:
                await ws.send("x")
                assert await ws.recv() == "x"

    run(main())


def test_plain_get_without_upgrade_gets_426():
    async def main():
        async with serving() as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), BOUND)
            assert answer.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
            assert b"Sec-WebSocket-Version: 13" in answer

    run(main())


def test_silent_client_is_dropped_after_open_timeout():
    """A client that connects and sends nothing is dropped after open_timeout."""

    async def main():
        async with serving(open_timeout=0.2) as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            assert await asyncio.wait_for(reader.read(), BOUND) == b""
            writer.close()

    run(main())


def test_broadcast_reaches_every_open_connection_once():
    """broadcast() writes the same message to every client, in order."""

    async def handler(ws):
        await ws.wait_closed()

    async def main():
        async with serving(handler) as srv:
            clients = [await connect(srv.url) for _ in range(5)]
            while len(srv.connections) < 5:
                await asyncio.sleep(0)  # yield until the handlers registered
            for i in range(3):
                broadcast(srv.connections, f"m{i}")
            broadcast(srv.connections, b"bin")
            for ws in clients:
                assert [await ws.recv() for _ in range(4)] == ["m0", "m1", "m2", b"bin"]
                await ws.close()

    run(main())


def test_broadcast_skips_then_drops_a_connection_that_is_not_reading(caplog):
    """One stalled client does not grow the server's memory or stall the rest, and is dropped."""

    async def handler(ws):
        await ws.wait_closed()

    async def main():
        async with serving(handler, write_limit=4096, ping_interval=None, ping_timeout=0.3) as srv:
            port = srv.port
            reader, writer = await open_raw_websocket(port)  # then never read again
            healthy = await connect(srv.url, max_queue=10000)
            while len(srv.connections) < 2:
                await asyncio.sleep(0)  # yield until the handlers registered
            own_port = writer.get_extra_info("sockname")[1]
            stalled = next(c for c in srv.connections if c.remote_address[1] == own_port)
            for i in range(300):
                message = f"{i:04}" + "x" * 60000
                broadcast(srv.connections, message)
                assert await asyncio.wait_for(healthy.recv(), BOUND) == message
            # The stalled client's kernel buffers filled long ago; ours did not grow.
            assert stalled.transport.get_write_buffer_size() <= 4096 + 60010
            # Stalled for longer than ping_timeout, it is dropped; the other stays.
            async with asyncio.timeout(BOUND):
                while stalled.state is not State.CLOSED:
                    broadcast(srv.connections, "tick")
                    assert await healthy.recv() == "tick"
                    await asyncio.sleep(0.02)  # the pace of a periodic broadcaster
            assert healthy.state is State.OPEN
            await healthy.close()
            writer.close()

    with caplog.at_level(logging.WARNING, logger="common"):
        run(main())
    assert any("skipped" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")
def test_connect_refused_raises_oserror():
    async def main():
        async with serving() as srv:
            port = srv.port
        with pytest.raises(OSError):
            await connect(f"ws://127.0.0.1:{port}")

    run(main())


@pytest.mark.parametrize("uri", ["http://x/", "ws://", "ws://x/#frag"])
def test_connect_rejects_bad_uris(uri):
    with pytest.raises(ValueError):
        run(connect(uri)._connect())


def test_shutdown_is_bounded_with_unresponsive_and_half_open_peers():
    """close() ends even when a peer never answers the close and another never finishes its handshake."""

    async def main():
        srv = await serve(echo, "127.0.0.1", 0, close_timeout=0.3, open_timeout=30)
        port = srv.sockets[0].getsockname()[1]
        _, mute = await open_raw_websocket(port, wait_for_answer=False)
        _, halfway = await asyncio.open_connection("127.0.0.1", port)
        halfway.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        await wait_until(lambda: len(srv.connections) == 1 and len(srv._handshaking) == 1)
        srv.close()
        await asyncio.wait_for(srv.wait_closed(), BOUND)
        mute.close()
        halfway.close()

    run(main())


def test_invalid_control_frames_are_refused_before_sending():
    """§5.5 and §7.4: ping/pong over 125 bytes, long reasons and unsendable codes raise ValueError; the connection stays usable."""

    async def main():
        async with serving() as srv, connect(srv.url) as ws:
            with pytest.raises(ValueError):
                await ws.ping(b"x" * 126)
            with pytest.raises(ValueError):
                await ws.pong(b"x" * 126)
            with pytest.raises(ValueError):
                await ws.close(1000, "r" * 124)
            for code in (999, 1005, 1006, 1015, 5000):
                with pytest.raises(ValueError):
                    await ws.close(code)
            await ws.send("still open")
            assert await ws.recv() == "still open"

    run(main())


def test_fragments_of_mixed_types_send_nothing():
    """A fragmented send with str and bytes mixed raises before any frame leaves."""

    async def main():
        async with serving() as srv, connect(srv.url) as ws:
            with pytest.raises(TypeError):
                await ws.send(["a", "b", b"c"])
            await ws.send("next")
            assert await ws.recv() == "next"

    run(main())


def test_process_request_error_is_a_500_and_the_server_goes_on(caplog):
    """A process_request that raises gets a 500 answer and a logged traceback; later requests work."""
    calls = []

    def process_request(path, headers):
        calls.append(path)
        if len(calls) == 1:
            raise RuntimeError("bug in the application")
        return None

    async def main():
        async with serving(process_request=process_request) as srv:
            with pytest.raises(InvalidStatus) as info:
                await connect(srv.url)
            assert info.value.status_code == 500
            async with connect(srv.url) as ws:
                await ws.send("ok")
                assert await ws.recv() == "ok"

    with caplog.at_level(logging.ERROR, logger="common"):
        run(main())
    assert any("bug in the application" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_handler_closing_after_the_peers_close_ends_at_once():
    """The peer's close, deferred behind unread messages, is answered by the handler's own close without waiting."""

    async def handler(ws):
        await ws.recv()
        await ws.close()

    async def main():
        # close_timeout far beyond BOUND: waiting for it would fail the test.
        async with serving(handler, close_timeout=6 * BOUND) as srv:
            reader, writer = await open_raw_websocket(srv.port)
            writer.write(b"\x81\x82\x00\x00\x00\x00hi" + b"\x81\x82\x00\x00\x00\x00hi" + b"\x88\x82\x00\x00\x00\x00\x03\xe8")
            assert await asyncio.wait_for(reader.read(), BOUND) == b"\x88\x02\x03\xe8"
            writer.close()

    run(main())


def test_every_wire_view_line_names_its_connection(caplog):
    """With two clients, each frame and state line says whose it is: the peer's address and port."""
    caplog.set_level(logging.DEBUG, logger="common")

    async def main():
        async with serving() as srv:
            async with connect(srv.url, compression=None) as one, connect(srv.url, compression=None) as two:
                for ws in (one, two):
                    await ws.send("hi")
                    assert await asyncio.wait_for(ws.recv(), BOUND) == "hi"
                return [ws.transport.get_extra_info("sockname")[:2] for ws in (one, two)]

    clients = run(main())
    names = [f"{host}:{port}" for host, port in clients]
    server_side = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and "< TEXT 'hi'" in r.getMessage()]
    # Each client's "hi" is logged once by the server, named by that client's address and port.
    assert sorted(line.split(" ")[0] for line in server_side if line.split(" ")[0] in names) == sorted(names)
    frame_lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert frame_lines and all(line.split(" ", 2)[1] in "<>=!%" for line in frame_lines), frame_lines[:5]


# The check runs in fresh interpreters: this one has long imported everything.
MMAPPED_BLOCKS_FOR_A_READ_BUFFER = """
import ctypes, sys
if sys.argv[1] == "import":
    import common.connection
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblks
buffer = bytes(262144)          # what asyncio allocates for every read
print(libc.mallinfo2().hblks - before)
"""


def test_read_buffers_come_from_the_heap_once_connection_is_imported():
    """On glibc, asyncio's 256 KiB read buffer is mmapped (a system call or three per read) until
    common.connection raises malloc's threshold at import; after it, no read maps memory."""
    import ctypes
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc 2.33 or later: no mallinfo2() to count mapped blocks")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def mapped(mode):
        result = subprocess.run([sys.executable, "-c", MMAPPED_BLOCKS_FOR_A_READ_BUFFER, mode], cwd=root,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return int(result.stdout)

    assert mapped("plain") == 1         # the cost this avoids: one mapped block per read buffer
    assert mapped("import") == 0


def test_vv_logs_compressed_and_masked_frames_as_they_were_on_the_wire(caplog):
    """-vv (HEADER_BYTES): a short frame's bytes as they came, compressed and masked, which explain
    --deflate reads back; a long one's header and its payload's size."""
    from common.connection import HEADER_BYTES
    from common.explain import explain

    async def scenario():
        async with serving() as server:
            async with connect(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/") as ws:
                await ws.send("compress me " * 30)              # 360 bytes: compressed to a few dozen
                await ws.recv()
                await ws.send(os.urandom(300))                  # random: too long even compressed
                await ws.recv()

    with caplog.at_level(HEADER_BYTES, logger="common"):
        run(scenario())
    # "PEER     frame 81 05 ..." or "PEER     header 82 7e 01 2c (then 300 payload bytes)"
    lines = [record.getMessage().split(" ", 1)[1].strip() for record in caplog.records
             if record.levelno == HEADER_BYTES and record.getMessage().split()[1] in ("frame", "header")]
    masked = [line for line in lines if line.startswith("frame c1 ") and int(line.split()[2], 16) & 0x80]
    explained = explain(masked[0].removeprefix("frame "), deflate=True)     # RSV1 and MASK: the client's
    assert "from the client" in explained and "=> message: text 'compress me compress me" in explained
    assert "(360 bytes)" in explained
    assert any(line.startswith("header ") and line.endswith("payload bytes)") for line in lines)


def test_the_reader_says_when_bytes_the_end_or_an_error_come():
    """streams.Reader calls on_arrival for data, EOF and an error, once the
    stream holds them, and reads like any StreamReader."""
    from common.streams import Reader

    async def main():
        reader = Reader(limit=64)
        calls = []
        reader.on_arrival = lambda: calls.append(reader.exception() or "called")
        reader.feed_data(b"abc")
        assert calls == ["called"]
        assert await reader.readexactly(2) == b"ab"
        reader.feed_eof()
        assert calls == ["called", "called"]
        assert await reader.read() == b"c" and reader.at_eof()
        error = ConnectionResetError("gone")
        reader = Reader(limit=64)
        reader.on_arrival = lambda: calls.append(reader.exception() or "called")
        reader.set_exception(error)
        assert calls == ["called", "called", error]
        with pytest.raises(ConnectionResetError):
            await reader.read()

    run(main())


def test_bytes_that_come_as_recv_is_cancelled_are_still_read():
    """A recv() cancelled in the very turn its bytes came leaves them in the
    stream: a reading task reads them, so the ping among them is answered
    although the handler never calls recv() again."""

    async def main():
        gate = asyncio.Event()

        async def handler(ws):
            await ws.recv()  # reading is the handler's from now on
            receiving = asyncio.ensure_future(ws.recv())
            await wait_until(lambda: ws._reading_inline)
            ws.reader.feed_data(b"\x89\x81\x00\x00\x00\x00p")  # a masked ping, as if it came from the socket
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiving
            await gate.wait()

        async with serving(handler) as srv:
            reader, writer = await open_raw_websocket(srv.port)
            writer.write(b"\x81\x82\x00\x00\x00\x00hi")
            assert await asyncio.wait_for(reader.readexactly(3), BOUND) == b"\x8a\x01p"
            gate.set()
            writer.close()

    run(main())

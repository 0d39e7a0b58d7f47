"""``python3 -m common inspect``: a relay that changes no byte, a view that only its own page may read.

The relay runs in-process (:func:`common.inspector.inspecting`) between two
peers on 127.0.0.1. Transparency is checked at the byte level: raw peers
send scripted bytes (every kind of frame, compressed messages with context
takeover, a 16 MiB message, both close orders, a refused handshake) and
each must receive exactly what the other sent, ends of TCP included; and
the library's own client and server, which fail on any wrong byte, talk
through it. The view's feed is read as the page reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest

from common import connect
from common.deflate import PerMessageDeflate
from common.frames import Close, CloseCode
from common.handshake import accept_key
from common.explain import explain_stream
from common.inspector import FRAMES_KEPT, Target, inspecting, parse_target
from common.observer import PREVIEW, Frame, Handshake, Watch, preview_text

try:                                    # tests/ as a package or as a plain directory
    from .helpers import BOUND, echo, run, serving, wait_until
    from .rawws import CONT, build_frame, close_payload
except ImportError:
    from helpers import BOUND, echo, run, serving, wait_until
    from rawws import CONT, build_frame, close_payload

ROOT = Path(__file__).resolve().parent.parent
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def request(extra: str = "", host: str = "127.0.0.1") -> bytes:
    return (f"GET /chat HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


def response(extra: str = "", accept: str | None = None) -> bytes:
    return (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept or accept_key(KEY)}\r\n{extra}\r\n").encode()


DEFLATE = "Sec-WebSocket-Extensions: permessage-deflate\r\n"


def compressed_messages(sender: PerMessageDeflate, messages: list[bytes], mask: bool) -> bytes:
    """Messages compressed by one compressor in a row (context takeover), each one frame with RSV1."""
    return b"".join(build_frame(1, sender.encode(m), rsv=4, mask=mask) for m in messages)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the observer, without I/O


def watched(client: bytes, server: bytes, *, piece: int = 0) -> tuple[Watch, list[Frame | Handshake], list[str]]:
    """Feed a handshake's request and response, then the frames each way; ``piece`` > 0 cuts them up."""
    notes: list[str] = []
    watch = Watch(on_note=notes.append)
    seen: list[Frame | Handshake] = []
    for side, data in (("client", client), ("server", server)):
        feed = watch.client_data if side == "client" else watch.server_data
        step = piece or len(data) or 1
        for start in range(0, len(data), step):
            seen += feed(data[start : start + step])
    return watch, seen, notes


def frames_of(seen: list[Frame | Handshake]) -> list[Frame]:
    return [item for item in seen if isinstance(item, Frame)]


def test_the_handshake_is_read_in_pieces_and_the_accept_value_checked():
    watch, seen, _ = watched(request(), response(), piece=3)
    handshake = watch.handshake
    assert handshake.request is not None and handshake.request.path == "/chat"
    assert handshake.response is not None and handshake.response.status == 101
    assert handshake.accept.startswith("matches") and accept_key(KEY) in handshake.accept
    assert watch.state == "open"
    bad, _, _ = watched(request(), response(accept="AAAAAAAAAAAAAAAAAAAAAAAAAAA="))
    assert bad.handshake.accept.startswith("does NOT match")


def test_every_kind_of_frame_is_seen_as_its_receiver_reads_it():
    client = request() + b"".join([
        build_frame(1, b"GET_TIME", mask_key=b"\xee\x74\x74\xf9"),
        build_frame(1, "h\u00e9".encode()[:2], fin=False), build_frame(CONT, "h\u00e9".encode()[2:]),
        build_frame(2, bytes(range(200))),
        build_frame(9, b"are you there?"),
        build_frame(8, close_payload(1000, "bye")),
    ])
    server = response() + b"".join([
        build_frame(1, b"12:00:00", mask=False), build_frame(10, b"are you there?", mask=False),
        build_frame(2, bytes(70000), mask=False), build_frame(8, close_payload(1000, "bye"), mask=False),
    ])
    watch, seen, notes = watched(client, server, piece=5)
    frames = frames_of(seen)
    assert notes == []
    first = frames[0]
    assert (first.side, first.header.opcode, first.header.masked, first.header.mask_key) == (
        "client", 1, True, b"\xee\x74\x74\xf9")
    assert preview_text(first) == ("text", "GET_TIME")
    assert first.wire == build_frame(1, b"GET_TIME", mask_key=b"\xee\x74\x74\xf9")
    assert [f.message for f in frames[1:3]] == [1, 1] and frames[2].header.opcode == CONT
    assert preview_text(frames[3]) == ("hex", bytes(range(200)).hex(" "))
    assert frames[3].header.length_bits == 16 and frames[0].header.length_bits == 7
    assert frames[4].header.opcode == 9 and preview_text(frames[4]) == ("text", "are you there?")
    assert frames[5].close == Close(1000, "bye")
    answer, pong, big, close = frames[6:]
    assert (answer.side, answer.header.masked, preview_text(answer)) == ("server", False, ("text", "12:00:00"))
    assert pong.header.opcode == 10
    assert (big.header.length, big.header.length_bits, len(big.preview), big.cut) == (70000, 64, PREVIEW, True)
    assert close.close == Close(1000, "bye")
    watch.eof("server")
    watch.eof("client")
    watch.end()
    assert watch.how_closed() == ("the client closed first: 1000 (normal closure) bye;"
                                  " the server answered 1000 (normal closure) bye")
    assert (watch.counts["client"].frames, watch.counts["server"].frames) == (6, 4)
    assert watch.counts["client"].bytes == len(client)


def test_compressed_messages_are_inflated_with_one_context_per_direction():
    messages = [b'{"time": "12:00:00", "value": 1}', b'{"time": "12:00:01", "value": 2}'] * 3
    client = request(DEFLATE) + compressed_messages(PerMessageDeflate(), messages, mask=True)
    server = response(DEFLATE) + compressed_messages(PerMessageDeflate(), messages[:2], mask=False)
    _, seen, notes = watched(client, server, piece=7)
    frames = frames_of(seen)
    assert notes == []
    assert [f.inflated for f in frames] == [len(m) for m in messages + messages[:2]]
    assert [f.preview for f in frames] == messages + messages[:2]
    # Context takeover: the later messages refer back, and are smaller on the wire than the first.
    assert frames[2].header.length < frames[0].header.length


def test_a_frame_that_breaks_the_protocol_is_shown_with_its_close_code_and_ends_the_watch():
    client = request() + build_frame(1, b"ok") + build_frame(1, b"\xff\xfe") + build_frame(1, b"later")
    watch, seen, notes = watched(client, response())
    frames = frames_of(seen)
    assert [f.error.code if f.error else None for f in frames] == [None, 1007]
    assert "invalid UTF-8" in notes[0] and "1007" in notes[0]
    assert watch.counts["client"].bytes == len(client)  # what follows is still counted, not read
    unmasked = request() + build_frame(1, b"hi", mask=False)
    _, seen, notes = watched(unmasked, response())
    assert frames_of(seen)[0].error.code == 1002 and "must be masked" in notes[0]


def test_bytes_after_a_close_frame_are_counted_and_named_once():
    client = request() + build_frame(8, close_payload(1000)) + build_frame(1, b"too late") * 2
    watch, seen, notes = watched(client, response(), piece=4)
    assert [f.header.opcode for f in frames_of(seen)] == [8]
    assert len(notes) == 1 and "after its close frame" in notes[0]
    assert watch.counts["client"].bytes == len(client)


def test_a_refused_handshake_and_plain_http_are_told_apart():
    refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nno\r\n"
    watch, _, _ = watched(request(), refusal)
    assert watch.state == "refused" and watch.directions == {}
    page = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    watch, _, _ = watched(page, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    assert watch.state == "http" and not watch.handshake.upgrade


def test_frames_sent_before_the_answer_are_read_once_it_comes_and_a_flood_of_them_is_not_kept():
    early = request() + build_frame(1, b"too soon")
    _, seen, notes = watched(early, response())
    assert preview_text(frames_of(seen)[0]) == ("text", "too soon") and notes == []
    flood = request() + build_frame(2, bytes(100_000))
    watch, seen, notes = watched(flood, response() + build_frame(1, b"hi", mask=False))
    assert [f.side for f in frames_of(seen)] == ["server"]
    assert "before the server's answer" in notes[0] and watch._early == bytearray()


def test_a_head_that_never_ends_is_dropped_not_kept():
    notes: list[str] = []
    watch = Watch(on_note=notes.append)
    for _ in range(40):
        watch.client_data(b"X-Filler: " + b"a" * 4000 + b"\r\n")
    assert watch.state == "unknown" and "cannot be read" in notes[0]
    assert len(watch._heads["client"].data) < 2 * 65536


def test_a_preview_cut_inside_a_character_shows_the_text_before_it():
    text = ("\u00e9" * PREVIEW).encode()  # 2 bytes a character: the preview ends on a boundary or inside one
    _, seen, _ = watched(request() + build_frame(1, text[: PREVIEW + 1]), response())
    shown, preview = preview_text(frames_of(seen)[0])
    assert shown == "text" and preview == "\u00e9" * (PREVIEW // 2)


def test_a_16_mib_message_costs_the_watch_one_piece_at_a_time():
    big = build_frame(2, os.urandom(16 * 2**20))
    watch = Watch()
    watch.client_data(request())
    watch.server_data(response())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        frames = [frame for start in range(0, len(big), 65536) for frame in watch.client_data(big[start : start + 65536])]
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [f.header.length for f in frames] == [16 * 2**20] and len(frames[0].preview) == PREVIEW
    assert peak - before < 1 * 2**20, peak - before     # a 64 KiB piece and its unmasked copy, not 16 MiB
    assert held - before < 16384, held - before         # the frame seen, its preview and header


def test_a_compression_bomb_is_inflated_a_piece_at_a_time():
    bomb = PerMessageDeflate().encode(bytes(64 * 2**20))  # 64 MiB of zeros, ~65 KB compressed
    watch = Watch()
    watch.client_data(request(DEFLATE))
    watch.server_data(response(DEFLATE))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        frames = frames_of(watch.client_data(build_frame(2, bomb, rsv=4)))
        grown = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert frames[0].inflated == 64 * 2**20
    assert grown < 4 * 2**20, grown


# --------------------------------------------------------------------------- the relay: byte for byte


class RawServer:
    """A TCP server on 127.0.0.1 that records everything a client sends and answers with a script."""

    def __init__(self, script) -> None:
        self.script = script            # async (reader, writer) -> None
        self.received = bytearray()
        self.eof = asyncio.Event()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        try:
            await self.script(self, writer)
        finally:
            writer.close()

    async def read(self, size: int) -> bytes:
        data = await self.reader.readexactly(size)
        self.received += data
        return data

    async def read_to_end(self) -> None:
        while data := await self.reader.read(65536):
            self.received += data
        self.eof.set()


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while data := await reader.read(65536):
        chunks.append(data)
    return b"".join(chunks)


@contextlib.asynccontextmanager
async def relay_to(port: int):
    async with inspecting(Target("ws", "127.0.0.1", port), "127.0.0.1", 0, "127.0.0.1", 0) as inspector:
        yield inspector


def scripted() -> tuple[bytes, bytes]:
    """What each raw peer sends before its close: every kind of frame, compressed ones with context
    takeover, control frames inside a fragmented message, 64-bit and 16-bit lengths, 16 MiB."""
    messages = [b'{"sensor": "A", "value": %d}' % i for i in range(20)]
    client = request(DEFLATE) + b"".join([
        build_frame(1, b"GET_TIME"),
        build_frame(2, b"\x00\x01\x02", fin=False), build_frame(9, b"ping in between"),
        build_frame(CONT, b"\x03\x04"),
        compressed_messages(PerMessageDeflate(), messages, mask=True),
        build_frame(2, os.urandom(16 * 2**20)),
        build_frame(10, b"unsolicited pong"),
    ])
    server = response(DEFLATE) + b"".join([
        build_frame(1, b"2026-12-07 12:00:00", mask=False),
        compressed_messages(PerMessageDeflate(), messages, mask=False),
        build_frame(9, b"keepalive", mask=False),
        build_frame(1, b"x" * 70000, mask=False),
    ])
    return client, server


CLOSE_CLIENT = build_frame(8, close_payload(1000, "done"))
CLOSE_SERVER = build_frame(8, close_payload(1001, "going away"), mask=False)


@pytest.mark.parametrize("first", ["client", "server"])
def test_the_relay_delivers_every_byte_unchanged_in_both_close_orders(first):
    """Each raw peer receives exactly what the other sent, and each end of TCP, in order.

    ``first`` sends the first close frame, the other answers; the server ends
    TCP first (§7.1.1), and the client's FIN must reach it too.
    """
    client_data, server_data = scripted()
    client_script, server_script = client_data + CLOSE_CLIENT, server_data + CLOSE_SERVER

    async def serve_script(server: RawServer, writer: asyncio.StreamWriter) -> None:
        await server.read(len(request(DEFLATE)))
        writer.write(server_data + (CLOSE_SERVER if first == "server" else b""))
        await server.read(len(client_script) - len(request(DEFLATE)))  # up to the client's close
        if first == "client":
            writer.write(CLOSE_SERVER)
        writer.write_eof()
        await server.read_to_end()

    async def main():
        async with RawServer(serve_script) as target, relay_to(target.port) as inspector:
            reader, writer = await asyncio.open_connection("127.0.0.1", inspector.relay_port)
            writer.write(request(DEFLATE))
            answer = await asyncio.wait_for(reader.readexactly(len(response(DEFLATE))), BOUND)
            writer.write(client_data[len(request(DEFLATE)) :])  # a client sends frames once the 101 is in
            rest = len(server_script) - len(answer)
            if first == "server":
                got = answer + await asyncio.wait_for(reader.readexactly(rest), BOUND)
                writer.write(CLOSE_CLIENT)
            else:
                writer.write(CLOSE_CLIENT)
                got = answer + await asyncio.wait_for(reader.readexactly(rest), BOUND)
            assert await asyncio.wait_for(reader.read(), BOUND) == b""  # the server's FIN came through
            writer.write_eof()
            await asyncio.wait_for(target.eof.wait(), BOUND)            # and the client's reached the server
            writer.close()
            assert digest(bytes(target.received)) == digest(client_script)
            assert digest(got) == digest(server_script)
            relayed = inspector.connections[1]
            await wait_until(lambda: relayed.over)
            watch = relayed.watch
            assert not relayed.notes
            assert watch.first_close == first and watch.first_eof == "server"
            assert watch.how_closed() == {
                "client": "the client closed first: 1000 (normal closure) done; the server answered 1001"
                          " (going away) going away",
                "server": "the server closed first: 1001 (going away) going away; the client answered 1000"
                          " (normal closure) done",
            }[first]
            assert watch.counts["client"].bytes == len(client_script)
            assert watch.counts["server"].bytes == len(server_script)

    run(main())


def test_a_refused_handshake_reaches_the_client_as_it_was_sent():
    refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nforbidden\n"

    async def refuse(server: RawServer, writer: asyncio.StreamWriter) -> None:
        await server.read(len(request()))
        writer.write(refusal)
        await writer.drain()

    async def main():
        async with RawServer(refuse) as target, relay_to(target.port) as inspector:
            reader, writer = await asyncio.open_connection("127.0.0.1", inspector.relay_port)
            writer.write(request())
            got = await asyncio.wait_for(read_to_end(reader), BOUND)
            writer.close()
            assert got == refusal
            relayed = inspector.connections[1]
            await wait_until(lambda: relayed.over)
            assert relayed.watch.state == "refused"

    run(main())


def test_the_library_s_own_client_and_server_talk_through_it_compressed_and_fragmented():
    """Both peers of the library fail on any wrong byte (masking, compression context, UTF-8)."""
    received: list[str | bytes] = []

    async def handler(ws):
        async for message in ws:
            received.append(message)
            await ws.send(message)
        # the client closed first

    async def main():
        async with serving(handler, compression="deflate") as srv, relay_to(srv.port) as inspector:
            url = f"ws://127.0.0.1:{inspector.relay_port}/chat"
            async with connect(url, compression="deflate") as ws:
                for message in ["GET_TIME", "é" * 3000, b"\x00" * 5000, "GET_TIME"]:
                    await ws.send(message)
                    assert await asyncio.wait_for(ws.recv(), BOUND) == message
                await ws.send(iter(["frag", "mented"]))
                assert await asyncio.wait_for(ws.recv(), BOUND) == "fragmented"
                await ws.ping(b"hello")
            assert ws.close_code == CloseCode.NORMAL_CLOSURE
            relayed = inspector.connections[1]
            await wait_until(lambda: relayed.over)
            assert not relayed.notes and relayed.watch.handshake.deflate is not None
            kinds = [(f.side, f.header.opcode, f.compressed) for _, f in relayed.frames]
            assert ("client", 1, True) in kinds and ("server", 2, True) in kinds
            assert ("client", CONT, False) in kinds or ("client", CONT, True) in kinds
            assert ("client", 9, False) in kinds and ("server", 10, False) in kinds
            assert relayed.watch.how_closed().startswith("the client closed first: 1000")

    run(main())


def test_an_unreachable_target_is_a_502_for_the_client():
    async def main():
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]   # bound, not listening: connecting is refused
            async with relay_to(port) as inspector:
                reader, writer = await asyncio.open_connection("127.0.0.1", inspector.relay_port)
                writer.write(request())
                got = await asyncio.wait_for(read_to_end(reader), BOUND)
                writer.close()
                relayed = inspector.connections[1]
                await wait_until(lambda: relayed.over)
                row = inspector._connection_event(relayed)
        assert got.startswith(b"HTTP/1.1 502 Bad Gateway") and b"cannot reach ws://127.0.0.1:" in got
        # The view says so: the path asked for, the inspector's own 502, and why.
        assert (row["path"], row["status"], row["state"]) == ("/chat", 502, "failed")
        assert row["closed"].startswith("the inspector cannot reach")

    run(main())


@dataclass
class InspectorCommand:
    """``python3 -m common inspect`` running as a subprocess: its three start lines and its ports."""

    proc: asyncio.subprocess.Process
    lines: list[str]
    relay: int
    view: int

    async def stop(self) -> tuple[str, str]:
        """SIGTERM, then its whole output: (stdout, stderr)."""
        self.proc.terminate()
        out, err = await asyncio.wait_for(self.proc.communicate(), BOUND)
        return out.decode(), err.decode()


@contextlib.asynccontextmanager
async def inspector_command(target_port: int, *options: str):
    """The command in front of ws://127.0.0.1:``target_port``, on free ports; killed if it still runs after."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "common", "inspect", *options, f"ws://127.0.0.1:{target_port}", "--port", "0",
        "--view-port", "0", cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        lines = [(await asyncio.wait_for(proc.stdout.readline(), BOUND)).decode() for _ in range(3)]
        relay = re.search(r"relaying ws://127\.0\.0\.1:(\d+)/", lines[0])
        view = re.search(r"open http://localhost:(\d+)/", lines[2])
        assert relay and view, lines
        yield InspectorCommand(proc, lines, int(relay[1]), int(view[1]))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far, in bytes (Linux: VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak memory from /proc")
def test_the_inspector_s_memory_stays_bounded_under_a_16_mib_message_and_100000_tiny_frames():
    """The inspector as a command, with a view reading its feed: its peak memory grows by a few MiB."""

    async def sink(server: RawServer, writer: asyncio.StreamWriter) -> None:
        await server.read(len(request()))
        writer.write(response())
        await server.read_to_end()

    async def main():
        async with RawServer(sink) as target, inspector_command(target.port) as command:
            view_url = f"ws://127.0.0.1:{command.view}/feed"
            async with connect(view_url, origin=f"http://127.0.0.1:{command.view}", max_size=None) as view:
                reading = asyncio.create_task(read_all(view))
                reader, writer = await asyncio.open_connection("127.0.0.1", command.relay)
                writer.write(request())
                await reader.readexactly(len(response()))
                start = peak_rss(command.proc.pid)
                writer.write(build_frame(2, os.urandom(16 * 2**20)))
                tiny = build_frame(2, b"x")
                for _ in range(100):
                    writer.write(tiny * 1000)
                    await writer.drain()
                writer.write(CLOSE_CLIENT)
                writer.write_eof()
                await asyncio.wait_for(target.eof.wait(), 6 * BOUND)
                grown = peak_rss(command.proc.pid) - start
                writer.close()
                reading.cancel()
            await command.stop()
        assert len(target.received) == len(request()) + 16 * 2**20 + 14 + 100_000 * 7 + len(CLOSE_CLIENT)
        # The relay's buffers, one piece's frames while they are looked at, the kept frames and
        # the view's pending updates: a few MiB, not 16, nor 100,000 frames.
        assert grown < 8 * 2**20, grown  # 2.3 MiB measured

    run(main(), bound=12 * BOUND)


async def read_all(ws) -> None:
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


def test_a_view_that_never_reads_does_not_slow_the_relay():
    async def main():
        async with serving(echo) as srv, relay_to(srv.port) as inspector:
            view_reader, view_writer = await asyncio.open_connection("127.0.0.1", inspector.view_port)
            view_writer.write(request(f"Origin: http://127.0.0.1:{inspector.view_port}\r\n",
                                      host=f"127.0.0.1:{inspector.view_port}").replace(b"/chat", b"/feed"))
            assert (await view_reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            # The view is connected and never reads a byte again.
            await wait_until(lambda: inspector.viewers)
            async with connect(f"ws://127.0.0.1:{inspector.relay_port}/") as ws:
                for i in range(3000):
                    await ws.send("x" * 200 + str(i))
                    assert await asyncio.wait_for(ws.recv(), BOUND) == "x" * 200 + str(i)
            view_writer.transport.abort()

    run(main(), bound=12 * BOUND)


# --------------------------------------------------------------------------- the view


def http_get(port: int, path: str, host: str, origin: str | None = None, upgrade: bool = False) -> bytes:
    headers = f"Host: {host}\r\n" + (f"Origin: {origin}\r\n" if origin else "")
    if upgrade:
        headers += (f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
                    "Sec-WebSocket-Version: 13\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\n{headers}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
        return data


@pytest.mark.parametrize("origin, host", [
    ("http://evil.example", "127.0.0.1:{port}"),          # another web site's page
    ("null", "127.0.0.1:{port}"),                          # a sandboxed frame, a file:// page
    (None, "127.0.0.1:{port}"),                            # a script: it has no page of the view
    ("http://127.0.0.1:1", "127.0.0.1:{port}"),            # another port is another origin
    ("http://rebound.example:{port}", "rebound.example:{port}"),  # DNS rebinding: a foreign name
])
def test_the_feed_refuses_anyone_but_the_view_s_own_page_with_403(origin, host):
    async def main():
        async with serving(echo) as srv, relay_to(srv.port) as inspector:
            port = inspector.view_port
            answer = await asyncio.to_thread(http_get, port, "/feed", host.format(port=port),
                                             origin and origin.format(port=port), True)
            assert answer.startswith(b"HTTP/1.1 403"), answer
            page = await asyncio.to_thread(http_get, port, "/", f"127.0.0.1:{port}")
            assert page.startswith(b"HTTP/1.1 200")
            assert inspector.viewers == set()

    run(main())


def test_the_page_is_served_only_under_this_machine_s_names():
    async def main():
        async with serving(echo) as srv, relay_to(srv.port) as inspector:
            port = inspector.view_port
            foreign = await asyncio.to_thread(http_get, port, "/", f"rebound.example:{port}")
            assert foreign.startswith(b"HTTP/1.1 403")
            for name in ("localhost", "127.0.0.1"):
                assert (await asyncio.to_thread(http_get, port, "/", f"{name}:{port}")).startswith(b"HTTP/1.1 200")

    run(main())


async def read_feed(view, until, events=None):
    """Read the feed's messages (arrays of events) until ``until(events)``; return all events read."""
    events = [] if events is None else events
    while not until(events):
        events += json.loads(await asyncio.wait_for(view.recv(), BOUND))
    return events


def test_the_feed_shows_the_handshake_and_the_masked_request_and_unmasked_answer():
    async def answer_time(ws):
        async for message in ws:
            await ws.send("2026-12-07 12:00:00" if message == "GET_TIME" else "?")

    def frame_of(events, side):
        return next((e for e in events if e["type"] == "frame" and e["from"] == side), None)

    async def main():
        async with serving(answer_time) as srv, relay_to(srv.port) as inspector:
            view_url = f"ws://127.0.0.1:{inspector.view_port}/feed"
            async with connect(view_url, origin=f"http://127.0.0.1:{inspector.view_port}") as view:
                hello = await read_feed(view, lambda events: events)
                assert hello[0]["type"] == "hello" and hello[0]["frames_kept"] == FRAMES_KEPT
                async with connect(f"ws://127.0.0.1:{inspector.relay_port}/time") as ws:
                    await ws.send("GET_TIME")
                    assert await ws.recv() == "2026-12-07 12:00:00"
                    events = await read_feed(view, lambda events: frame_of(events, "server"))
                request_frame, answer = frame_of(events, "client"), frame_of(events, "server")
                assert request_frame["masked"] and len(bytes.fromhex(request_frame["key"])) == 4
                assert (request_frame["kind"], request_frame["preview"], request_frame["length"],
                        request_frame["length_bits"]) == ("text", "GET_TIME", 8, 7)
                assert not answer["masked"] and answer["key"] is None
                assert answer["preview"] == "2026-12-07 12:00:00"
                connection = [e for e in events if e["type"] == "connection"][-1]
                assert (connection["path"], connection["status"]) == ("/time", 101)
                assert connection["accept"].startswith("matches")
                await view.send(json.dumps({"type": "explain", "conn": request_frame["conn"],
                                            "n": request_frame["n"]}))
                explained = await read_feed(view, lambda events: any(e["type"] == "explanation" for e in events))
                text = next(e for e in explained if e["type"] == "explanation")["text"]
                assert "masking key" in text and "'GET_TIME'" in text and "MASK     bit 8      1" in text
                # A page opened later gets what was kept.
                async with connect(view_url, origin=f"http://127.0.0.1:{inspector.view_port}") as late:
                    past = await read_feed(late, lambda events: frame_of(events, "server"))
                    assert frame_of(past, "client")["preview"] == "GET_TIME"

    run(main())


def test_a_connection_keeps_its_last_frames_only():
    async def main():
        async with serving(echo) as srv, relay_to(srv.port) as inspector:
            async with connect(f"ws://127.0.0.1:{inspector.relay_port}/") as ws:
                for i in range(FRAMES_KEPT):
                    await ws.send(str(i))
                    await ws.recv()
            relayed = inspector.connections[1]
            await wait_until(lambda: relayed.over)
            assert len(relayed.frames) == FRAMES_KEPT
            assert relayed.number == 2 * FRAMES_KEPT + 2          # every message echoed, two closes
            assert relayed.frames[-1][0] == relayed.number

    run(main())


# --------------------------------------------------------------------------- the command


def inspect_command(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common", "inspect", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=BOUND, **kwargs)


@pytest.mark.parametrize("target, words", [
    ("localhost:5678", "give ws://HOST:PORT"),
    ("http://localhost:5678", "give ws://HOST:PORT"),
    ("ws://localhost:5678/chat", "give the server's address alone"),
    ("ws://localhost:99999", "not a WebSocket address"),
])
def test_a_bad_target_is_one_line_and_exit_status_2(target, words):
    done = inspect_command(target, "--port", "0", "--view-port", "0")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and words in done.stderr and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_parse_target_defaults_the_port_by_scheme():
    assert parse_target("ws://localhost") == Target("ws", "localhost", 80)
    assert str(parse_target("wss://[::1]:8443/")) == "wss://[::1]:8443"


def test_the_command_prints_where_to_connect_relays_and_stops_on_sigterm():
    async def main():
        async with serving(echo) as srv, inspector_command(srv.port, "-v") as command:
            first, second, third = command.lines
            assert first.startswith("relaying ws://127.0.0.1:") and f"to ws://127.0.0.1:{srv.port}" in first
            assert f"?port={command.relay}" in second
            assert third.startswith("the view: open http://localhost:")
            async with connect(f"ws://127.0.0.1:{command.relay}/") as ws:
                await ws.send("through the inspector")
                assert await asyncio.wait_for(ws.recv(), BOUND) == "through the inspector"
            out, err = await command.stop()
        assert command.proc.returncode == 0
        assert "server stopped" in out and "Traceback" not in err
        assert "> TEXT 'through the inspector' [21 bytes]" in err   # the wire view's line

    run(main())


def test_a_wss_target_is_relayed_over_tls_and_checked_against_the_given_certificate():
    """``wss://`` TARGET: TLS to the target (verified), the same frames to a plain ws:// client."""
    fixtures = Path(__file__).resolve().parent / "fixtures"
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(fixtures / "localhost.pem", fixtures / "localhost.key")
    trusted = ssl.create_default_context(cafile=fixtures / "localhost.pem")

    async def main():
        async with serving(echo, ssl=server_side) as srv:
            target = Target("wss", "127.0.0.1", srv.port)
            async with inspecting(target, "127.0.0.1", 0, "127.0.0.1", 0, ssl_context=trusted) as inspector:
                async with connect(f"ws://127.0.0.1:{inspector.relay_port}/") as ws:
                    await ws.send("over TLS")
                    assert await asyncio.wait_for(ws.recv(), BOUND) == "over TLS"
            # Without the certificate, the target is not trusted: the client gets 502 and why.
            async with inspecting(target, "127.0.0.1", 0, "127.0.0.1", 0) as inspector:
                reader, writer = await asyncio.open_connection("127.0.0.1", inspector.relay_port)
                writer.write(request())
                got = await asyncio.wait_for(read_to_end(reader), BOUND)
                writer.close()
                assert got.startswith(b"HTTP/1.1 502") and b"CERTIFICATE_VERIFY_FAILED" in got

    run(main())


@pytest.mark.parametrize("option", ["--port", "--view-port"])
def test_a_port_in_use_is_one_line_and_exit_status_1(option):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        other = "--view-port" if option == "--port" else "--port"
        done = inspect_command("ws://127.0.0.1:1", option, str(busy.getsockname()[1]), other, "0")
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "in use" in done.stderr and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_vv_writes_the_wire_view_that_explain_reads_both_ways():
    """``inspect -vv`` logs handshake headers and frame bytes as the client's wire view: explain reads it."""

    async def main():
        async with serving(echo, compression="deflate") as srv, inspector_command(srv.port, "-vv") as command:
            async with connect(f"ws://127.0.0.1:{command.relay}/", compression="deflate") as ws:
                # Compressed (over 128 bytes), and the second refers back to the first.
                for message in ("GET_TIME " * 20, "GET_TIME " * 20):
                    await ws.send(message)
                    assert await asyncio.wait_for(ws.recv(), BOUND) == message
            _, err = await command.stop()
        return err

    log = run(main())
    assert "Sec-WebSocket-Extensions: permessage-deflate" in log and "     frame c1 " in log
    explained = "".join(explain_stream([log]))
    assert "error" not in explained, explained
    # Each direction's frames, with their sender, inflated with that direction's context.
    assert explained.count("from the client") >= 3 and explained.count("from the server") >= 3
    assert explained.count("as text (RFC 7692 §7.2.2): 'GET_TIME GET_TIME") == 4, explained

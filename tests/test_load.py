"""Load and faults, on 127.0.0.1 only, every loop bounded in count and time.

- test9 with 1,000 data clients and 10 that stop reading: every healthy client
  gets every broadcast sample in order, the stalled ones are dropped, the
  server's memory stays bounded.
- 10,000 idle connections to `python3 -m common echo`: accepted, measured
  (memory per connection), closed cleanly.
- test5 to test9 stopped with SIGTERM or SIGINT at full rate: the log holds
  every sample taken, in whole lines, and the count printed at exit matches;
  a client that drops mid-broadcast costs nobody else anything; a log that
  cannot be written (full disk) is reported in one clear line, exit non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:                                    # tests/ as a package or as a plain directory
    from .helpers import run
    from .stage_util import REPO, running_stage
except ImportError:
    from helpers import run
    from stage_util import REPO, running_stage

from common import ConnectionClosed, connect

TIMEOUT = 10.0                          # bound on every single wait for an event
SHARED = ["test5", "test6", "test7", "test8", "test9"]
VALUE = r"-?\d+\.\d{3}"
LINE = {name: re.compile(rf"SENSOR,{VALUE}") for name in ("test5", "test6", "test7")}
LINE |= {name: re.compile(rf"SENSOR,(\d+),{VALUE},{VALUE},{VALUE}") for name in ("test8", "test9")}
LOGGED = re.compile(r"logged (\d+) samples")
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to the hard limit (children inherit it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc/PID/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


async def ask(ws, command: str) -> str:
    await ws.send(command)
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


def log_lines(path: Path) -> list[str]:
    """The log's lines; the file must end with a newline (no half-written last line)."""
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), f"the last line is incomplete: {text[-80:]!r}"
    return text.splitlines()


def assert_contiguous(received: list[str], broadcast: list[str], who: str) -> None:
    """`received` is a run of consecutive broadcast samples: in order, none missing between first and last."""
    assert received, f"{who} received nothing"
    start = broadcast.index(received[0])
    assert received == broadcast[start : start + len(received)], f"{who}: a gap or a reordering"


# ------------------------------------------------------------ data safety


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("name", SHARED)
def test_stop_at_full_rate_keeps_every_sample(name, sig, tmp_path):
    """Stopped while sampling at --speed 50, with a client dropping mid-broadcast: every sample is logged whole."""
    with running_stage(name, tmp_path=tmp_path, speed=50) as stage:

        async def scenario() -> list[list[str]]:
            commands = await connect(stage.url("/commands/"))
            clients = [await connect(stage.url("/stream_data/"), max_queue=4096) for _ in range(4)]
            for ws in clients:
                await asyncio.wait_for(await ws.ping(), TIMEOUT)   # open, so in the audience
            assert await ask(commands, "START") == "OK: acquisition started"
            received: list[list[str]] = [[] for _ in clients]
            for _ in range(10):
                for i, ws in enumerate(clients):
                    received[i].append(await asyncio.wait_for(ws.recv(), TIMEOUT))
            clients[0].transport.abort()     # gone mid-stream, without a close frame
            for _ in range(10):
                for i, ws in enumerate(clients[1:], 1):
                    received[i].append(await asyncio.wait_for(ws.recv(), TIMEOUT))
            # Stop while the sensor runs at full rate; read what comes until the server's close.
            stage.proc.send_signal(sig)
            for i, ws in enumerate(clients[1:], 1):
                with contextlib.suppress(ConnectionClosed):
                    async with asyncio.timeout(TIMEOUT):
                        async for message in ws:
                            received[i].append(message)
                assert ws.close_code == 1001, "closed by the server going away"
            return received[1:]

        received = run(scenario(), bound=60)
        stage.proc.wait(TIMEOUT)        # one signal only: a second one would be another test
        assert stage.stop(sig) == 0
    output = stage.output()
    assert "Traceback" not in output and "Exception" not in output, output[-2000:]
    lines = log_lines(stage.log_path)
    assert int(LOGGED.search(output).group(1)) == len(lines) >= 19 * 4
    assert all(LINE[name].fullmatch(line) for line in lines), [line for line in lines if not LINE[name].fullmatch(line)][:3]
    if name in ("test8", "test9"):
        stamps = [int(LINE[name].fullmatch(line).group(1)) for line in lines]
        assert stamps == sorted(stamps)
    broadcast = lines[0::4]                       # every 4th sample, from the first, goes to the clients
    for i, messages in enumerate(received):
        assert messages[: len(broadcast)] == broadcast[: len(messages)], f"client {i}: not every sample in order"
        assert len(messages) >= 20


def test_log_on_a_full_disk_is_reported_at_start_up(tmp_path):
    """--log on a filesystem with no space left: one line that says so, exit 2, before listening."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        with contextlib.suppress(OSError), open(mount / "filler", "wb") as filler:
            for _ in range(100):        # bounded: 8 KiB fill long before 100 writes of 4 KiB
                filler.write(b"\0" * 4096)
                filler.flush()
        assert os.statvfs(mount).f_bavail == 0
        for name in SHARED:
            log = mount / "log.txt"
            result = subprocess.run(
                [sys.executable, str(REPO / name / "server.py"), "--port", "0", "--host", "127.0.0.1", "--log", str(log)],
                cwd=tmp_path, capture_output=True, text=True, timeout=20,
            )
            assert result.returncode == 2, (name, result.stderr)
            assert result.stdout == ""
            assert result.stderr.count("\n") == 1 and str(log) in result.stderr, result.stderr
            assert "No space left on device" in result.stderr
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("name", SHARED)
def test_log_write_failure_stops_the_server_with_a_clear_error(name, tmp_path):
    """--log /dev/full: every write fails with ENOSPC; the server says so in one line and exits non-zero."""
    with running_stage(name, "--log", "/dev/full", tmp_path=tmp_path, speed=50) as stage:

        async def scenario() -> None:
            async with connect(stage.url("/commands/")) as commands:
                assert await ask(commands, "START") == "OK: acquisition started"
                with contextlib.suppress(ConnectionClosed):   # the server stops on its own
                    async with asyncio.timeout(TIMEOUT):
                        async for _ in commands:
                            pass
                assert commands.close_code == 1001

        run(scenario(), bound=60)
        stage.proc.wait(TIMEOUT)
        code = stage.stop()
    output = stage.output()
    assert code not in (0, None), output
    assert "Traceback" not in output and "Exception in thread" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "/dev/full" in errors[0] and "No space left on device" in errors[0], output
    assert LOGGED.search(output).group(1) == "0"


# ------------------------------------------------------------ broadcast load

CLIENTS = int(os.environ.get("LOAD_CLIENTS", 1000))
STALLED = 10


def handshake(port: int, path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (FIN set, payload under 126 bytes), masked with a fresh key (RFC 6455 §5.3)."""
    key = os.urandom(4)
    return bytes((0x80 | opcode, 0x80 | len(payload))) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class DataClient(asyncio.Protocol):
    """A lean data-socket client: one callback per read, no task per message, so that a
    thousand of them in one process keep up with the server. It collects text messages,
    answers pings at once and echoes the server's close; server frames are unmasked and short."""

    def __init__(self, port: int, path: str) -> None:
        self.request = handshake(port, path)
        self.buffer = bytearray()
        self.upgraded = False
        self.messages: list[str] = []
        self.close_code: int | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            assert self.buffer.startswith(b"HTTP/1.1 101 "), bytes(self.buffer[:80])
            del self.buffer[: end + 4]
            self.upgraded = True
            self.opened.set_result(None)
        buf, pos = self.buffer, 0
        while len(buf) - pos >= 2:
            opcode, length, header = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if length == 126:
                if len(buf) - pos < 4:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            if len(buf) - pos < header + length:
                break
            payload = bytes(buf[pos + header : pos + header + length])
            pos += header + length
            if opcode == 0x1:
                self.messages.append(payload.decode())
            elif opcode == 0x9:
                self.transport.write(masked(0xA, payload))
            elif opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if payload else 1005
                self.transport.write(masked(0x8, payload[:2]))
        del buf[:pos]

    def close(self) -> None:
        """Start the close handshake (1000); `closed` resolves when the server has closed TCP."""
        self.transport.write(masked(0x8, (1000).to_bytes(2, "big")))

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))
        self.closed.set_result(None)


async def open_stalled(port: int, path: str) -> tuple[asyncio.StreamWriter, int]:
    """A raw client that completes the handshake and then never reads again; returns it and its port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake(port, path))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101 ")
    return writer, writer.get_extra_info("sockname")[1]


def test_test9_broadcast_to_1000_clients_with_10_that_stop_reading(tmp_path):
    """1,000 data clients get every broadcast sample in order; 10 that never read are dropped; memory bounded."""
    raise_fd_limit()
    keepalive = 3.0  # seconds: tolerant of a busy machine (pongs late by up to 3 s), dropped in ~2.5x that
    with running_stage("test9", "--keepalive", str(keepalive), tmp_path=tmp_path, speed=20) as stage:
        pid = stage.proc.pid

        async def scenario() -> dict:
            loop = asyncio.get_running_loop()
            figures: dict = {"rss_idle": rss_kib(pid)}
            gate = asyncio.Semaphore(100)    # at most 100 handshakes in flight: the listen backlog is 100

            async def open_client() -> DataClient:
                async with gate:
                    _, client = await loop.create_connection(
                        lambda: DataClient(stage.port, "/stream_data/"), "127.0.0.1", stage.port)
                    await asyncio.wait_for(client.opened, TIMEOUT)
                    return client

            clients = await asyncio.gather(*(open_client() for _ in range(CLIENTS)))
            stalled = [await open_stalled(stage.port, "/stream_data/") for _ in range(STALLED)]
            async with connect(stage.url("/commands/")) as commands:
                # Every data handler has registered its client once it has printed its Hello.
                async with asyncio.timeout(TIMEOUT):
                    while stage.output().count("Hello, client") < CLIENTS + STALLED + 1:
                        await asyncio.sleep(0.05)
                figures["rss_connected"] = rss_kib(pid)
                started = time.monotonic()
                assert await ask(commands, "START") == "OK: acquisition started"
                # The stalled clients answer no ping: dropped within 2 x keepalive, closed keepalive / 2 later.
                for _, port in stalled:
                    await asyncio.to_thread(stage.wait_for_output, f"Bye, client 127.0.0.1:{port}\n", 4 * keepalive + TIMEOUT)
                figures["dropped_after"] = time.monotonic() - started
                before = min(len(c.messages) for c in clients)
                async with asyncio.timeout(TIMEOUT):   # the healthy ones keep getting samples
                    while min(len(c.messages) for c in clients) < before + 20:
                        await asyncio.sleep(0.05)
                figures["rss_loaded"] = rss_kib(pid)
                assert await ask(commands, "STOP") == "OK: acquisition stopped"
                figures["seconds"] = time.monotonic() - started
            # Close every client (1000): after the server's close, everything it sent has arrived.
            for client in clients:
                client.close()
            await asyncio.wait_for(asyncio.gather(*(c.closed for c in clients)), 3 * TIMEOUT)
            for writer, _ in stalled:
                writer.transport.abort()
            assert [c.close_code for c in clients] == [1000] * CLIENTS
            figures["received"] = [c.messages for c in clients]
            return figures

        figures = run(scenario(), bound=120)
        assert stage.stop(signal.SIGTERM) == 0
    output = stage.output()
    assert "Traceback" not in output
    lines = log_lines(stage.log_path)
    broadcast = lines[0::4]
    received = figures.pop("received")
    for i, messages in enumerate(received):
        # Every client was in the audience before START: it got every broadcast sample, in order.
        assert messages == broadcast, f"client {i}: {len(messages)} of {len(broadcast)} samples, or out of order"
    stamps = [int(LINE["test9"].fullmatch(m).group(1)) for m in broadcast]
    assert all(a < b for a, b in zip(stamps, stamps[1:])), "timestamps strictly increase"
    growth = figures["rss_loaded"] - figures["rss_connected"]
    assert growth < 16 * 1024, f"the server grew by {growth} KiB while broadcasting"
    print(f"\n{CLIENTS} clients + {STALLED} stalled: {len(broadcast)} samples each "
          f"({CLIENTS * len(broadcast)} deliveries in {figures['seconds']:.1f} s), stalled dropped after "
          f"{figures['dropped_after']:.1f} s; server RSS {figures['rss_idle'] / 1024:.1f} MiB idle, "
          f"{figures['rss_connected'] / 1024:.1f} MiB connected, {figures['rss_loaded'] / 1024:.1f} MiB under load")


# ------------------------------------------------------------ idle connections

IDLE = int(os.environ.get("LOAD_IDLE", 10_000))


def test_10000_idle_connections_to_the_echo_server(tmp_path):
    """`python3 -m common echo` holds 10,000 idle connections, each still answering; all close with 1000."""
    limit = raise_fd_limit()
    if limit < IDLE + 100:
        pytest.skip(f"the open-file hard limit is {limit}: too low for {IDLE} connections")
    # The server inherits the raised limit: it is started after the setrlimit() above.
    server = subprocess.Popen([sys.executable, "-m", "common", "echo", "--host", "127.0.0.1", "--port", "0"],
                              cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()        # bounded: the server prints it at once, or exits
        match = re.fullmatch(r"listening on ws://127\.0\.0\.1:(\d+)/\n", line)
        assert match, (line, server.poll())
        port = int(match.group(1))
        limits = Path(f"/proc/{server.pid}/limits").read_text()
        assert re.search(rf"Max open files\s+{limit}\s", limits), limits

        async def scenario() -> dict:
            loop = asyncio.get_running_loop()
            figures = {"rss_before": rss_kib(server.pid)}
            started = time.monotonic()
            gate = asyncio.Semaphore(100)    # handshakes in flight: at most the listen backlog

            async def open_client() -> DataClient:
                async with gate:
                    _, client = await loop.create_connection(lambda: DataClient(port, "/"), "127.0.0.1", port)
                    await asyncio.wait_for(client.opened, TIMEOUT)
                    return client

            clients = await asyncio.gather(*(open_client() for _ in range(IDLE)))
            figures["open_seconds"] = time.monotonic() - started
            # Each of them is served: a sample of them gets an echo.
            sample = clients[:: max(1, IDLE // 200)]
            for i, client in enumerate(sample):
                client.transport.write(masked(0x1, f"echo {i}".encode()))
            async with asyncio.timeout(TIMEOUT):
                while not all(client.messages for client in sample):
                    await asyncio.sleep(0.05)
            assert [client.messages for client in sample] == [[f"echo {i}"] for i in range(len(sample))]
            figures["rss_after"] = rss_kib(server.pid)
            started = time.monotonic()
            gate = asyncio.Semaphore(500)

            async def close(client: DataClient) -> None:
                async with gate:
                    client.close()
                    await asyncio.wait_for(client.closed, TIMEOUT)

            await asyncio.gather(*(close(client) for client in clients))
            figures["close_seconds"] = time.monotonic() - started
            assert [client.close_code for client in clients] == [1000] * IDLE
            stat = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
            figures["server_cpu"] = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
            return figures

        figures = run(scenario(), bound=90)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, errors = server.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            _, errors = server.communicate()
    assert server.returncode == 0 and "Traceback" not in errors, errors[-2000:]
    per_connection = (figures["rss_after"] - figures["rss_before"]) / IDLE
    print(f"\ntest process CPU {time.process_time():.1f} s, server CPU {figures['server_cpu']:.1f} s")
    print(f"\n{IDLE} idle connections: opened in {figures['open_seconds']:.1f} s, closed in "
          f"{figures['close_seconds']:.1f} s; server RSS {figures['rss_before'] / 1024:.1f} -> "
          f"{figures['rss_after'] / 1024:.1f} MiB, {per_connection:.1f} KiB per connection")
    assert per_connection < 64, "an idle connection should cost kilobytes, not tens of them"

"""Hostile peers against the echo server: what they cost it in memory and time.

    python3 bench/hostile.py [--root REPO] [--only 1a,1b,2a,2b,3] [--drop-bound 60]

Each scenario starts a fresh ``python3 -m common echo --host 127.0.0.1 --port 0
[--max-size N]`` with cwd=REPO (default: the repository this file is in), attacks
it from raw sockets in this process, measures it, and kills it. Run it against
two checkouts (before and after a fix) to compare. The result is one table on
stdout; progress goes to stderr.

Scenarios
---------
1a  FIN pins a connection: 20 clients with a small receive buffer (SO_RCVBUF set
    before connect) complete the handshake, send 100,000 masked 125-byte pings
    each without reading (non-blocking sends, bounded in time), then
    shutdown(SHUT_WR) -- a FIN, no close frame -- and keep their sockets open
    without reading. How long until the server has dropped each connection?
1b  Blocked send: one client (small receive buffer) sends one 16 MiB binary
    message, never reads the echo, sends a FIN and keeps its socket open. How
    long until the server drops it; then SIGTERM: how long until it exits?
2a  Empty-fragment flood (--max-size 1 MiB): a 0-byte non-final BINARY frame,
    then 0-byte continuation frames as fast as possible for 10 s.
2b  1-byte fragments (--max-size 1 MiB): 1-byte continuation frames until the
    message is 1 MiB + 4 KiB; when does 1009 arrive, and what did it cost?
3   Ping flood without reading: masked 125-byte pings for 12 s, never reading.

How things are measured
-----------------------
* Memory: the server's VmRSS from /proc/PID/status, sampled every 50 ms by a
  thread (the sampled maximum is the peak), and VmHWM (the kernel's own peak
  RSS since the process started). Growth is against VmRSS of the idle server
  measured just before the first connection. Freed memory is not always given
  back to the system by the allocator, so residual RSS is an upper bound of
  what is still in use.
* Whether the server still holds a connection is read from the kernel's TCP
  table (/proc/net/tcp), never from the client socket (reading it would unblock
  the server): the rows whose local port is the server's port and whose state
  is not LISTEN, matched to a client by the remote port. A row counts as held
  by the server while its socket inode is one of the server's open file
  descriptors (/proc/PID/fd); once the server has closed its socket the row
  may linger in the kernel as an orphan (inode 0, e.g. LAST_ACK or FIN_WAIT1
  with unsent data), which is counted separately. Polled every 0.5 s.
* Times are time.monotonic() in this process; frames "sent" are frames whose
  bytes the kernel accepted from this process (not necessarily read by the
  server yet: its receive queue is reported where it matters).

Every wait is bounded; the server is killed (by pid) at the end of each
scenario whatever happens, and also dies with this process (PR_SET_PDEATHSIG).
Only 127.0.0.1 is used. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import errno
import os
import platform
import queue
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 15.0      # seconds for the server to print its "listening on" line
IO_TIMEOUT = 5.0            # seconds for a connect, a handshake, a blocking socket call
POLL = 0.5                  # seconds between two looks at the TCP table
SAMPLE = 0.05               # seconds between two RSS samples
MIB = 1 << 20

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
    11: "CLOSING", 12: "NEW_SYN_RECV",
}
LISTEN = 10


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def growth(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:+.1f} MiB"


def secs(t: float | None) -> str:
    return "n/a" if t is None else f"{t:.2f} s"


# ------------------------------------------------------------------ frames

def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte masking key (RFC 6455 section 5.3)."""
    n = len(payload)
    if n == 0:
        return b""
    full = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(full, "little")).to_bytes(n, "little")


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """One masked client frame, minimal length encoding, fresh random key."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", b0, 0x80 | 127, n)
    key = os.urandom(4)
    return header + key + mask_bytes(payload, key)


class Incoming:
    """What the server sent: frames parsed leniently, the close frame, EOF or reset."""

    def __init__(self, start: float, limit: int = 1 << 30) -> None:
        self.start = start
        self.buf = bytearray()
        self.limit = limit             # bytes parsed at most (keeps parsing bounded)
        self.bytes = 0
        self.counts: dict[int, int] = {}
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_at: float | None = None
        self.eof_at: float | None = None
        self.reset_at: float | None = None
        self.data_after_close = 0

    @property
    def ended(self) -> bool:
        return self.eof_at is not None or self.reset_at is not None

    def feed(self, data: bytes, now: float) -> None:
        self.bytes += len(data)
        if self.close_at is not None:
            self.data_after_close += len(data)
            return
        if self.bytes > self.limit:
            return
        buf = self.buf
        buf += data
        pos = 0
        n = len(buf)
        for _ in range(n // 2 + 1):    # at most one frame per 2 bytes
            if n - pos < 2:
                break
            b0, b1 = buf[pos], buf[pos + 1]
            length, header = b1 & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, header = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, header = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if b1 & 0x80:
                header += 4            # a server must not mask; skip the key if it does
            if n - pos < header + length:
                break
            opcode = b0 & 0x0F
            self.counts[opcode] = self.counts.get(opcode, 0) + 1
            if opcode == CLOSE:
                payload = bytes(buf[pos + header:pos + header + length])
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.close_reason = payload[2:].decode("utf-8", "replace")
                self.close_at = now - self.start
                self.data_after_close += n - (pos + header + length)
                pos = n
                break
            pos += header + length
        del buf[:pos]

    def recv_from(self, sock: socket.socket, now: float) -> None:
        """One non-blocking recv(); records EOF and resets."""
        try:
            data = sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError, socket.timeout):
            return
        except ConnectionResetError:
            self.reset_at = now - self.start
            return
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                self.reset_at = now - self.start
                return
            raise
        if not data:
            self.eof_at = now - self.start
        else:
            self.feed(data, now)

    def describe(self) -> str:
        if self.close_code is not None:
            text = f"close frame {self.close_code}"
            if self.close_reason:
                text += f" ({self.close_reason[:50]!r})"
            text += f" at {self.close_at:.2f} s"
        else:
            text = "no close frame"
        if self.eof_at is not None:
            text += f"; TCP FIN at {self.eof_at:.2f} s"
        elif self.reset_at is not None:
            text += f"; TCP reset at {self.reset_at:.2f} s"
        else:
            text += "; TCP still open"
        return text


# ------------------------------------------------------------------ raw client

def ws_connect(port: int, rcvbuf: int | None = None) -> tuple[socket.socket, bytes]:
    """TCP connect (SO_RCVBUF set first if given) and the opening handshake."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(IO_TIMEOUT)
        sock.connect((HOST, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        sock.sendall((
            f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode("ascii"))
        data = b""
        deadline = time.monotonic() + IO_TIMEOUT
        for _ in range(1000):
            if b"\r\n\r\n" in data:
                break
            if time.monotonic() > deadline or len(data) > 65536:
                raise RuntimeError(f"no complete handshake response: {data[:200]!r}")
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError(f"server closed during the handshake: {data[:200]!r}")
            data += chunk
        else:
            raise RuntimeError("handshake response in too many pieces")
        head, rest = data.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise RuntimeError(f"handshake refused: {status!r}")
        return sock, rest
    except BaseException:
        sock.close()
        raise


def abortive_close(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class Ring:
    """Sends a chunk made of whole frames over and over, optionally up to `total` bytes."""

    def __init__(self, chunk: bytes, total: int | None = None) -> None:
        self.view = memoryview(chunk)
        self.size = len(chunk)
        self.pos = 0
        self.sent = 0
        self.total = total

    @property
    def done(self) -> bool:
        return self.total is not None and self.sent >= self.total

    def send_some(self, sock: socket.socket) -> int:
        """One non-blocking send(); 0 if the socket buffer is full."""
        n = self.size - self.pos
        if self.total is not None:
            n = min(n, self.total - self.sent)
        if n <= 0:
            return 0
        try:
            sent = sock.send(self.view[self.pos:self.pos + n])
        except (BlockingIOError, InterruptedError):
            return 0
        self.pos = (self.pos + sent) % self.size
        self.sent += sent
        return sent


def send_error(exc: OSError) -> str:
    return f"send failed: {type(exc).__name__} ({errno.errorcode.get(exc.errno or 0, exc.errno)})"


# ------------------------------------------------------------------ server process

def _child_setup() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def read_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB ({} once it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError, OSError):
        return {}
    return out


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Server:
    """The echo server as a subprocess, with an RSS sampler."""

    def __init__(self, root: Path, extra: list[str]) -> None:
        self.cmd = [sys.executable, "-m", "common", "echo", "--host", HOST, "--port", "0", *extra]
        self.stderr = tempfile.TemporaryFile()
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            self.cmd, cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_child_setup,
        )
        self.pid = self.proc.pid
        self.drainer = threading.Thread(target=self._drain, daemon=True)
        self.drainer.start()
        self.port = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self.sampler: threading.Thread | None = None
        try:
            self._wait_listening()
        except BaseException:
            self.kill()
            self.close_stderr()
            raise

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for _ in range(10000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"no 'listening on' line within {STARTUP_TIMEOUT} s; "
                                   f"stderr: {self.stderr_text()[-1000:]}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait(timeout=IO_TIMEOUT)
                raise RuntimeError(f"server exited with {code} before listening; "
                                   f"stderr: {self.stderr_text()[-1000:]}")
            if "listening on ws://" in line:
                self.port = int(line.split("ws://", 1)[1].strip().rstrip("/").rsplit(":", 1)[1])
                break
        if not self.port:
            raise RuntimeError("no port read from the server's output")

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace"))
        self.lines.put(None)

    def stderr_text(self) -> str:
        try:
            self.stderr.seek(0)
            return self.stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    # -- memory

    def start_sampling(self) -> None:
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _sample(self) -> None:
        t0 = time.monotonic()
        for _ in range(int(3600 / SAMPLE)):          # an hour at most
            if self._stop.is_set():
                return
            rss = read_status(self.pid).get("VmRSS")
            if rss is None:
                return
            self.samples.append((time.monotonic(), rss))
            if time.monotonic() - t0 > 3600:
                return
            self._stop.wait(SAMPLE)

    def rss(self) -> int | None:
        return read_status(self.pid).get("VmRSS")

    def hwm(self) -> int | None:
        return read_status(self.pid).get("VmHWM")

    def peak(self, until: float | None = None) -> int | None:
        values = [rss for t, rss in list(self.samples) if until is None or t <= until]
        return max(values) if values else None

    # -- connections

    def socket_inodes(self) -> set[int] | None:
        """Inodes of the server's open sockets, from /proc/PID/fd (None if unreadable)."""
        inodes = set()
        try:
            names = os.listdir(f"/proc/{self.pid}/fd")
        except OSError:
            return None
        for name in names[:100000]:
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
        return inodes

    def tcp_table(self) -> dict[int, list[dict[str, int]]]:
        """Rows of /proc/net/tcp{,6} on the server's port (not LISTEN), by remote port."""
        rows: dict[int, list[dict[str, int]]] = {}
        owned = self.socket_inodes()
        for path in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(path) as f:
                    lines = f.read().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) < 10:
                    continue
                lport = int(fields[1].rsplit(":", 1)[1], 16)
                state = int(fields[3], 16)
                if lport != self.port or state == LISTEN:
                    continue
                rport = int(fields[2].rsplit(":", 1)[1], 16)
                txq, rxq = (int(x, 16) for x in fields[4].split(":"))
                inode = int(fields[9])
                held = inode != 0 and (owned is None or inode in owned)
                rows.setdefault(rport, []).append(
                    {"state": state, "txq": txq, "rxq": rxq, "inode": inode, "held": int(held)})
        return rows

    # -- the end

    def terminate_timed(self, bound: float) -> tuple[float | None, int | None]:
        """SIGTERM, then wait up to `bound` s: (seconds to exit or None, exit code)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        for _ in range(int(bound / 0.02) + 10):
            code = self.proc.poll()
            if code is not None:
                return time.monotonic() - t0, code
            if time.monotonic() - t0 > bound:
                break
            time.sleep(0.02)
        return None, None

    def kill(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=IO_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        if self.sampler is not None:
            self.sampler.join(timeout=IO_TIMEOUT)
        self.drainer.join(timeout=IO_TIMEOUT)
        if self.proc.stdout:
            self.proc.stdout.close()

    def stderr_summary(self) -> str:
        text = self.stderr_text().strip()
        if not text:
            return "nothing"
        lines = text.splitlines()
        tracebacks = sum(1 for line in lines if line.startswith("Traceback"))
        last = lines[-1][:80]
        return f"{len(lines)} lines, {tracebacks} tracebacks; last: {last}"

    def close_stderr(self) -> None:
        try:
            self.stderr.close()
        except OSError:
            pass


def idle_baseline(server: Server) -> int | None:
    """VmRSS of the idle server once it has settled (two equal readings, 1 s at most)."""
    last = server.rss()
    for _ in range(10):
        time.sleep(0.1)
        now = server.rss()
        if now == last:
            break
        last = now
    return last


# ------------------------------------------------------------------ scenarios

Rows = list[tuple[str, str]]


def wait_until_dropped(server: Server, ports: list[int], t0: float, bound: float,
                       on_poll=None) -> dict[int, float | None]:
    """Poll the TCP table every POLL s until no client port is held by the server."""
    dropped: dict[int, float | None] = {p: None for p in ports}
    for _ in range(int(bound / POLL) + 2):
        now = time.monotonic()
        table = server.tcp_table()
        for p in ports:
            if dropped[p] is None and not any(r["held"] for r in table.get(p, [])):
                dropped[p] = now - t0
        if on_poll is not None:
            on_poll(now, table)
        if all(v is not None for v in dropped.values()) or now - t0 >= bound:
            break
        time.sleep(max(0.0, POLL - (time.monotonic() - now)))
    return dropped


def state_summary(server: Server, ports: list[int]) -> str:
    """The kernel rows of these connections: held ones by state, orphans by state."""
    table = server.tcp_table()
    held: dict[str, int] = {}
    orphan: dict[str, int] = {}
    for p in ports:
        for row in table.get(p, []):
            target = held if row["held"] else orphan
            name = TCP_STATES.get(row["state"], str(row["state"]))
            target[name] = target.get(name, 0) + 1
    fmt = lambda d: ", ".join(f"{k} x{v}" for k, v in sorted(d.items())) or "none"  # noqa: E731
    return f"held: {fmt(held)}; orphaned in kernel: {fmt(orphan)}"


def scenario_1a(root: Path, opts: argparse.Namespace) -> Rows:
    rows: Rows = []
    n_clients, n_pings = opts.clients, opts.pings
    server = Server(root, [])
    socks: list[socket.socket] = []
    try:
        baseline = idle_baseline(server)
        server.start_sampling()
        rows.append(("server idle VmRSS", mib(baseline)))
        for _ in range(n_clients):
            sock, _rest = ws_connect(server.port, rcvbuf=opts.rcvbuf)
            sock.setblocking(False)
            socks.append(sock)
        rows.append(("clients handshaken (SO_RCVBUF requested)", f"{len(socks)} ({opts.rcvbuf} B)"))
        ping = client_frame(PING, b"p" * 125)
        frame_size = len(ping)
        per_chunk = 1000
        chunk = b"".join(client_frame(PING, os.urandom(125)) for _ in range(per_chunk))
        rings = [Ring(chunk, total=n_pings * frame_size) for _ in socks]
        log(f"1a: {len(socks)} clients sending {n_pings} pings each (bound {opts.send_bound:.0f} s)")
        t_start = time.monotonic()
        deadline = t_start + opts.send_bound
        failures: dict[int, str] = {}
        for _ in range(10_000_000):
            now = time.monotonic()
            active = [i for i, r in enumerate(rings) if not r.done and i not in failures]
            if not active or now >= deadline:
                break
            _, writable, _ = select.select([], [socks[i] for i in active], [], min(0.2, deadline - now))
            ready = {s.fileno() for s in writable}
            for i in active:
                if socks[i].fileno() in ready:
                    try:
                        rings[i].send_some(socks[i])
                    except OSError as exc:
                        failures[i] = send_error(exc)
        send_time = time.monotonic() - t_start
        sent = [r.sent // frame_size for r in rings]
        rows.append(("pings sent per client (min / max of target)",
                     f"{min(sent):,} / {max(sent):,} of {n_pings:,}"))
        rows.append(("pings sent, all clients", f"{sum(sent):,} in {send_time:.1f} s"
                     + (" (time bound hit)" if any(not r.done for r in rings) else "")))
        if failures:
            rows.append(("sends failed (server closed?)", f"{len(failures)} clients: "
                         f"{next(iter(failures.values()))}"))
        ports = [s.getsockname()[1] for s in socks]
        rss_fin = server.rss()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        t_fin = time.monotonic()
        rows.append(("VmRSS growth when the FINs were sent", growth(None if rss_fin is None or baseline is None
                                                                     else rss_fin - baseline)))
        log(f"1a: FIN sent on all {len(socks)}; watching the TCP table up to {opts.drop_bound:.0f} s")
        backlog = {"max_rxq": 0}

        def note(now: float, table: dict) -> None:
            rxq = sum(r["rxq"] for p in ports for r in table.get(p, []))
            backlog["max_rxq"] = max(backlog["max_rxq"], rxq)

        note(t_fin, server.tcp_table())
        rows.append(("server receive queues at FIN (unread pings)", f"{backlog['max_rxq']:,} B"))
        dropped = wait_until_dropped(server, ports, t_fin, opts.drop_bound)
        times = [t for t in dropped.values() if t is not None]
        gone = len(times)
        if gone == len(ports):
            rows.append(("time until all connections dropped (after FIN)", f"{max(times):.1f} s"))
        else:
            rows.append(("time until all connections dropped (after FIN)",
                         f"NOT GONE after {opts.drop_bound:.0f} s: {len(ports) - gone} of {len(ports)} still held"))
        if times:
            rows.append(("drop time after FIN, min / median / max",
                         f"{min(times):.1f} / {statistics.median(times):.1f} / {max(times):.1f} s ({gone} dropped)"))
        rows.append(("kernel rows at the end", state_summary(server, ports)))
        residual = server.rss()
        peak = server.peak()
        hwm = server.hwm()
        rows.append(("peak VmRSS growth (sampled / VmHWM)",
                     f"{growth(None if peak is None or baseline is None else peak - baseline)} / "
                     f"{growth(None if hwm is None or baseline is None else hwm - baseline)}"))
        rows.append(("residual VmRSS growth at the end", growth(None if residual is None or baseline is None
                                                                 else residual - baseline)))
        cpu = cpu_seconds(server.pid)
        rows.append(("server CPU time, whole scenario", secs(cpu)))
        rows.append(("server stderr", server.stderr_summary()))
    finally:
        for s in socks:
            abortive_close(s)
        server.kill()
        server.close_stderr()
    return rows


def send_all(sock: socket.socket, data: bytes, bound: float) -> tuple[int, float, str]:
    """Non-blocking sends of `data` within `bound` s: (bytes sent, seconds, how it ended)."""
    ring = Ring(data, total=len(data))
    t0 = time.monotonic()
    sock.setblocking(False)
    for _ in range(10_000_000):
        now = time.monotonic()
        if ring.done:
            return ring.sent, now - t0, "complete"
        if now - t0 >= bound:
            return ring.sent, now - t0, f"time bound ({bound:.0f} s) hit"
        _, w, _ = select.select([], [sock], [], min(0.2, bound - (now - t0)))
        if w:
            try:
                ring.send_some(sock)
            except OSError as exc:
                return ring.sent, time.monotonic() - t0, send_error(exc)
    return ring.sent, time.monotonic() - t0, "loop bound hit"


def scenario_1b(root: Path, opts: argparse.Namespace) -> Rows:
    rows: Rows = []
    server = Server(root, [])
    sock = None
    try:
        baseline = idle_baseline(server)
        server.start_sampling()
        rows.append(("server idle VmRSS", mib(baseline)))
        sock, _rest = ws_connect(server.port, rcvbuf=opts.rcvbuf)
        size = 16 * MIB
        frame = client_frame(BINARY, os.urandom(size))
        log("1b: sending one 16 MiB binary message, never reading")
        sent, took, how = send_all(sock, frame, opts.send_bound)
        rows.append(("16 MiB message sent (one masked frame)", f"{sent:,} of {len(frame):,} B in {took:.2f} s, {how}"))
        port = sock.getsockname()[1]
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        t_fin = time.monotonic()
        log(f"1b: FIN sent; watching the TCP table up to {opts.drop_bound:.0f} s")
        dropped = wait_until_dropped(server, [port], t_fin, opts.drop_bound)
        t = dropped[port]
        rows.append(("time until the connection dropped (after FIN)",
                     f"{t:.1f} s" if t is not None else f"NOT GONE after {opts.drop_bound:.0f} s"))
        table = server.tcp_table().get(port, [])
        if table:
            row = table[0]
            rows.append(("its kernel row then", f"{TCP_STATES.get(row['state'])}, "
                         f"{'held by the server' if row['held'] else 'orphaned'}, "
                         f"send queue {row['txq']:,} B"))
        else:
            rows.append(("its kernel row then", "none"))
        peak, hwm, now_rss = server.peak(), server.hwm(), server.rss()
        rows.append(("peak VmRSS growth (sampled / VmHWM)",
                     f"{growth(None if peak is None or baseline is None else peak - baseline)} / "
                     f"{growth(None if hwm is None or baseline is None else hwm - baseline)}"))
        rows.append(("VmRSS growth before SIGTERM", growth(None if now_rss is None or baseline is None
                                                            else now_rss - baseline)))
        log(f"1b: SIGTERM; waiting up to {opts.drop_bound:.0f} s for the server to exit")
        took, code = server.terminate_timed(opts.drop_bound)
        rows.append(("SIGTERM to exit", f"{took:.1f} s (exit code {code})" if took is not None
                     else f"DID NOT EXIT within {opts.drop_bound:.0f} s (killed)"))
        rows.append(("server stderr", server.stderr_summary()))
    finally:
        if sock is not None:
            abortive_close(sock)
        server.kill()
        server.close_stderr()
    return rows


def flood(server: Server, sock: socket.socket, ring: Ring, seconds: float, read: bool,
          watch_port: int | None = None) -> dict:
    """Send from `ring` until it is done, `seconds` pass or sending fails.

    With `read`, what the server sends is read and parsed meanwhile; a close
    frame from the server stops the sending. With `watch_port`, the TCP table
    is looked at every POLL s for the server's side of this connection.
    """
    t0 = time.monotonic()
    incoming = Incoming(t0)
    sock.setblocking(False)
    result = {"how": "loop bound hit", "held_lost_at": None, "max_rxq": 0}
    next_poll = t0
    for _ in range(100_000_000):
        now = time.monotonic()
        if watch_port is not None and now >= next_poll:
            rows = server.tcp_table().get(watch_port, [])
            result["max_rxq"] = max([result["max_rxq"]] + [r["rxq"] for r in rows])
            if result["held_lost_at"] is None and not any(r["held"] for r in rows):
                result["held_lost_at"] = now - t0
            next_poll = now + POLL
        if ring.done:
            result["how"] = "all sent"
            break
        if now - t0 >= seconds:
            result["how"] = f"time bound ({seconds:g} s) reached"
            break
        if incoming.close_at is not None:
            result["how"] = "stopped: close frame received"
            break
        if incoming.ended:
            result["how"] = "stopped: server ended TCP"
            break
        rlist = [sock] if read and not incoming.ended else []
        r, w, _ = select.select(rlist, [sock], [], min(0.2, seconds - (now - t0)))
        if r:
            incoming.recv_from(sock, time.monotonic())
        if w:
            try:
                ring.send_some(sock)
            except OSError as exc:
                result["how"] = send_error(exc)
                break
    result["duration"] = time.monotonic() - t0
    result["incoming"] = incoming
    result["t0"] = t0
    return result


def read_after(sock: socket.socket, incoming: Incoming, bound: float) -> None:
    """Read (and parse) what the server sends, until EOF or reset or `bound` s."""
    t0 = time.monotonic()
    sock.setblocking(False)
    for _ in range(10_000_000):
        now = time.monotonic()
        if incoming.ended or now - t0 >= bound:
            return
        r, _, _ = select.select([sock], [], [], min(0.2, bound - (now - t0)))
        if r:
            incoming.recv_from(sock, time.monotonic())


def scenario_2a(root: Path, opts: argparse.Namespace) -> Rows:
    rows: Rows = []
    server = Server(root, ["--max-size", str(MIB)])
    sock = None
    try:
        baseline = idle_baseline(server)
        server.start_sampling()
        rows.append(("server idle VmRSS (--max-size 1 MiB)", mib(baseline)))
        sock, _rest = ws_connect(server.port)
        sock.sendall(client_frame(BINARY, b"", fin=False))
        empty = b"".join(client_frame(CONT, b"", fin=False) for _ in range(256))
        chunk = empty * 170                          # 43,520 frames, 255 KiB
        frame_size = 6
        port = sock.getsockname()[1]
        log(f"2a: flooding empty continuation frames for {opts.flood_seconds:g} s")
        ring = Ring(chunk)
        result = flood(server, sock, ring, opts.flood_seconds, read=True, watch_port=port)
        incoming: Incoming = result["incoming"]
        frames = 1 + ring.sent // frame_size         # the BINARY frame, then continuations
        rss_end = server.rss()
        rows.append(("empty frames sent", f"{frames:,} ({frames * frame_size / MIB:.1f} MiB) in "
                     f"{result['duration']:.1f} s; {result['how']}"))
        table = server.tcp_table().get(port, [])
        rxq = sum(r["rxq"] for r in table)
        rows.append(("still unread by the server at the end", f"{rxq:,} B (~{rxq // frame_size:,} frames)"))
        # What comes back after the flood (the server may still be working through it).
        read_after(sock, incoming, opts.after_seconds)
        rows.append(("server's answer (times from flood start)", incoming.describe()))
        held = any(r["held"] for r in server.tcp_table().get(port, []))
        rows.append((f"server still holds the connection {opts.after_seconds:g} s after", "yes" if held else "no"))
        peak, hwm = server.peak(), server.hwm()
        rows.append(("peak VmRSS growth (sampled / VmHWM)",
                     f"{growth(None if peak is None or baseline is None else peak - baseline)} / "
                     f"{growth(None if hwm is None or baseline is None else hwm - baseline)}"))
        rows.append(("VmRSS growth at the end of the flood", growth(None if rss_end is None or baseline is None
                                                                    else rss_end - baseline)))
        if frames and peak is not None and baseline is not None:
            rows.append(("peak growth per empty frame sent", f"{(peak - baseline) * 1024 / frames:.1f} B"))
        rows.append(("server stderr", server.stderr_summary()))
    finally:
        if sock is not None:
            abortive_close(sock)
        server.kill()
        server.close_stderr()
    return rows


def scenario_2b(root: Path, opts: argparse.Namespace) -> Rows:
    rows: Rows = []
    server = Server(root, ["--max-size", str(MIB)])
    sock = None
    try:
        baseline = idle_baseline(server)
        server.start_sampling()
        rows.append(("server idle VmRSS (--max-size 1 MiB)", mib(baseline)))
        sock, _rest = ws_connect(server.port)
        total_payload = MIB + 4096                     # 1 MiB + 4 KiB, one byte per frame
        first = client_frame(BINARY, b"x", fin=False)
        piece = b"".join(client_frame(CONT, os.urandom(1), fin=False) for _ in range(4096))
        frame_size = len(first)                        # 7 bytes
        stream = first + piece * ((total_payload - 1) // 4096) + piece[:((total_payload - 1) % 4096) * frame_size]
        log(f"2b: sending {total_payload:,} one-byte fragments")
        ring = Ring(stream, total=len(stream))
        result = flood(server, sock, ring, opts.send_bound, read=True)
        incoming: Incoming = result["incoming"]
        frames = ring.sent // frame_size
        rows.append(("1-byte fragments sent", f"{frames:,} of {total_payload:,} "
                     f"({ring.sent / MIB:.1f} MiB on the wire) in {result['duration']:.1f} s; {result['how']}"))
        if incoming.close_at is None:
            read_after(sock, incoming, opts.after_seconds)
        else:
            read_after(sock, incoming, min(opts.after_seconds, 5.0))
        rows.append(("server's answer (times from the first fragment)", incoming.describe()))
        if incoming.close_at is not None:
            at_close = server.peak(until=result["t0"] + incoming.close_at)
            rows.append(("peak VmRSS growth before the close frame arrived",
                         growth(None if at_close is None or baseline is None else at_close - baseline)))
            if at_close is not None and baseline is not None:
                rows.append(("  per payload byte accepted (1 MiB)", f"{(at_close - baseline) * 1024 / MIB:.1f} B"))
        peak, hwm = server.peak(), server.hwm()
        rows.append(("peak VmRSS growth, whole scenario (sampled / VmHWM)",
                     f"{growth(None if peak is None or baseline is None else peak - baseline)} / "
                     f"{growth(None if hwm is None or baseline is None else hwm - baseline)}"))
        now_rss = server.rss()
        rows.append(("residual VmRSS growth at the end", growth(None if now_rss is None or baseline is None
                                                                 else now_rss - baseline)))
        rows.append(("server stderr", server.stderr_summary()))
    finally:
        if sock is not None:
            abortive_close(sock)
        server.kill()
        server.close_stderr()
    return rows


def scenario_3(root: Path, opts: argparse.Namespace) -> Rows:
    rows: Rows = []
    server = Server(root, [])
    sock = None
    try:
        baseline = idle_baseline(server)
        server.start_sampling()
        rows.append(("server idle VmRSS", mib(baseline)))
        sock, _rest = ws_connect(server.port, rcvbuf=opts.rcvbuf)
        chunk = b"".join(client_frame(PING, os.urandom(125)) for _ in range(1000))
        frame_size = 131
        port = sock.getsockname()[1]
        ring = Ring(chunk)
        log(f"3: flooding pings for {opts.ping_seconds:g} s without reading")
        result = flood(server, sock, ring, opts.ping_seconds, read=False, watch_port=port)
        pings = ring.sent // frame_size
        rows.append(("pings sent (never reading)", f"{pings:,} ({ring.sent / MIB:.1f} MiB) in "
                     f"{result['duration']:.1f} s; {result['how']}"))
        rows.append(("pings sent per second", f"{pings / max(result['duration'], 1e-9):,.0f}"))
        table = server.tcp_table().get(port, [])
        rows.append(("server side during/after the flood",
                     ("released its socket at {:.1f} s".format(result["held_lost_at"])
                      if result["held_lost_at"] is not None else "still held")
                     + "; now: " + (", ".join(f"{TCP_STATES.get(r['state'])} "
                                              f"({'held' if r['held'] else 'orphaned'}, "
                                              f"send queue {r['txq']:,} B, unread {r['rxq']:,} B)"
                                              for r in table) or "no row")))
        rss_end = server.rss()
        peak, hwm = server.peak(), server.hwm()
        rows.append(("peak VmRSS growth (sampled / VmHWM)",
                     f"{growth(None if peak is None or baseline is None else peak - baseline)} / "
                     f"{growth(None if hwm is None or baseline is None else hwm - baseline)}"))
        rows.append(("VmRSS growth at the end of the flood", growth(None if rss_end is None or baseline is None
                                                                    else rss_end - baseline)))
        # Now read what the server has for us, bounded, to see whether it sent a close frame.
        incoming = result["incoming"]
        incoming.start = time.monotonic()
        log(f"3: reading what the server sends, up to {opts.after_seconds:g} s")
        read_after(sock, incoming, opts.after_seconds)
        rows.append((f"then read for up to {opts.after_seconds:g} s",
                     f"{incoming.counts.get(PONG, 0):,} pongs, {incoming.bytes / MIB:.1f} MiB; "
                     + incoming.describe()))
        rows.append(("server stderr", server.stderr_summary()))
    finally:
        if sock is not None:
            abortive_close(sock)
        server.kill()
        server.close_stderr()
    return rows


SCENARIOS = {
    "1a": ("FIN pins a connection (20 clients x 100k pings, FIN, no reading)", scenario_1a),
    "1b": ("blocked send (16 MiB echo never read, FIN, then SIGTERM)", scenario_1b),
    "2a": ("empty-fragment flood, --max-size 1 MiB", scenario_2a),
    "2b": ("1-byte fragments past 1 MiB, --max-size 1 MiB", scenario_2b),
    "3": ("ping flood without reading", scenario_3),
}


def describe_root(root: Path) -> str:
    try:
        head = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h %s"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "common"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "(not a git checkout?)"
    return f"{head[:100]}" + (" + uncommitted changes in common/" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    default_root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=default_root, help="repository whose common/ is measured")
    p.add_argument("--only", default="", help="comma-separated scenarios, e.g. 1a,2a (default: all)")
    p.add_argument("--drop-bound", type=float, default=60.0, help="seconds to wait for a drop / an exit")
    p.add_argument("--send-bound", type=float, default=40.0, help="seconds allowed to send (1a, 1b, 2b)")
    p.add_argument("--flood-seconds", type=float, default=10.0, help="2a: flood duration")
    p.add_argument("--ping-seconds", type=float, default=12.0, help="3: flood duration")
    p.add_argument("--after-seconds", type=float, default=10.0, help="reading after a flood, at most")
    p.add_argument("--clients", type=int, default=20, help="1a: clients")
    p.add_argument("--pings", type=int, default=100_000, help="1a: pings per client")
    p.add_argument("--rcvbuf", type=int, default=4096, help="SO_RCVBUF of the clients that never read")
    opts = p.parse_args(argv)
    root = opts.root.resolve()
    if not (root / "common" / "__main__.py").is_file():
        p.error(f"{root} has no common/__main__.py")
    selected = [s.strip() for s in opts.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in selected if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")

    started = time.monotonic()
    results: list[tuple[str, Rows]] = []
    for name in selected:
        title, func = SCENARIOS[name]
        log(f"scenario {name}: {title}")
        t0 = time.monotonic()
        try:
            rows = func(root, opts)
        except KeyboardInterrupt:
            results.append((name, [("INTERRUPTED", "Ctrl+C")]))
            break
        except Exception as exc:  # one failing scenario must not hide the others
            rows = [("SCENARIO FAILED", " | ".join(f"{type(exc).__name__}: {exc}".split("\n"))[:300])]
            traceback.print_exc(file=sys.stderr)
        rows.append(("scenario wall time", f"{time.monotonic() - t0:.1f} s"))
        results.append((name, rows))

    width = max([len(k) for _, rows in results for k, _ in rows] + [10])
    print(f"hostile peers vs. python3 -m common echo -- root {root}")
    print(f"  commit: {describe_root(root)}")
    print(f"  {time.strftime('%Y-%m-%d %H:%M:%S')}, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs; "
          f"client SO_RCVBUF {opts.rcvbuf} B (kernel doubles it), drop bound {opts.drop_bound:g} s")
    print()
    print(f"{'':4}{'measure':<{width}}  value")
    print(f"{'':4}{'-' * width}  {'-' * 40}")
    for name, rows in results:
        print(f"{name:<4}{SCENARIOS[name][0]}")
        for key, value in rows:
            print(f"{'':4}{key:<{width}}  {value}")
        print()
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

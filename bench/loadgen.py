"""The load generator: one scenario against one running server, result as one JSON line.

    python3 bench/loadgen.py SCENARIO --port P --server-pid PID [--warmup S] [--duration S]
                             [--deflate] [--raw-tcp] [--clients N] [--connections N]

Started by bench/run.py in its own process (never in the server's), standard library only:
raw non-blocking sockets and one `selectors` loop.  It is built so that it costs the server's
opponent as little CPU as possible, and it proves it: every result carries the generator's
own CPU time over the measurement window (resource.getrusage) and the server's (from
/proc/PID/stat), both as a fraction of one core.

Cheap by construction:
* Every frame it sends is built before the clock starts: per connection, a ring of K
  distinct messages, masked (and compressed, with --deflate) once.  Sending is a slice.
* Replies are verified by comparing the received bytes against the ring of expected
  server frames (one memcmp per recv).  Only if a server frames a reply differently
  (fragments it, sends a ping, compresses it) does a connection switch to a full frame
  parser, which reassembles and checks every message the slow way.

Honest by construction:
* Every echoed message is checked in full (length and content, not just a sample), in
  order, on every connection; messages carry the connection and sequence number, so a
  stale, duplicated or cross-wired echo is caught.
* Only complete messages count.  The rate is complete messages over the measured window
  (after a warm-up); messages in flight at either edge are not counted.
* A wrong byte, an unexpected close, a server that stops answering for STALL_TIMEOUT
  seconds: the generator prints {"error": ...} and exits with status 2.
"""

import argparse
import errno
import json
import os
import random
import resource
import selectors
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchproto  # noqa: E402
from wsclient import (  # noqa: E402
    OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT,
    FrameParser, ProtocolError, check_handshake_response, client_frame, close_frame,
    handshake_request, server_frame,
)

HOST = "127.0.0.1"
STALL_TIMEOUT = 5.0  # seconds without any progress before we call the server stuck
RECV_SIZE = 1 << 18


class BenchError(Exception):
    """The server misbehaved, or did not answer in time.  Fatal for this run."""


# --------------------------------------------------------------------------- measuring

def own_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_cpu(pid):
    """CPU seconds (user + system, all threads) of another process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the ")" closing the command name, utime and stime are fields 12 and 13 (0-based).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy():
    """CPU seconds all processors spent busy (everything on the machine), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


class Snapshot:
    def __init__(self, count, server_pid):
        self.time = time.monotonic()
        self.gen_cpu = own_cpu()
        self.srv_cpu = proc_cpu(server_pid)
        self.busy = machine_busy()
        self.count = count


def measured(s0, s1, unit, scale=1.0, **details):
    """The result line for a throughput scenario measured between two snapshots.

    srv_us_per_op (server CPU microseconds per counted operation) is the figure least
    disturbed by scheduling noise: it does not care how long anyone waited.
    """
    w = window(s0, s1)
    return {
        "value": w["rate"] * scale, "unit": unit,
        "gen_cpu": w["gen_cpu"], "srv_cpu": w["srv_cpu"], "bg_cpu": w["bg_cpu"],
        "srv_us_per_op": 1e6 * w["srv_cpu"] * w["seconds"] / max(1, w["count"]),
        "details": {"count": w["count"], "seconds": round(w["seconds"], 3), **details},
    }


def window(s0, s1):
    """Rate and CPU fractions between two snapshots."""
    seconds = s1.time - s0.time
    return {
        "seconds": seconds,
        "count": s1.count - s0.count,
        "rate": (s1.count - s0.count) / seconds,
        "gen_cpu": (s1.gen_cpu - s0.gen_cpu) / seconds,
        "srv_cpu": (s1.srv_cpu - s0.srv_cpu) / seconds,
        # Everything else the machine did meanwhile, in cores: other processes compete
        # with the server and the generator for the same processors.
        "bg_cpu": max(0.0, (s1.busy - s0.busy) - (s1.gen_cpu - s0.gen_cpu) - (s1.srv_cpu - s0.srv_cpu)) / seconds,
    }


# --------------------------------------------------------------------------- opening connections

def read_head(sock, deadline):
    """Read an HTTP response head; return (head, bytes that followed it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            raise BenchError("timed out waiting for the handshake response") from None
        if not chunk:
            raise BenchError(f"server closed the connection during the handshake (got {data[:200]!r})")
        data += chunk
        if len(data) > 65536:
            raise BenchError("handshake response head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


class Opened:
    """A connection after its opening handshake."""

    def __init__(self, sock, leftover=b"", deflate=None):
        self.sock, self.leftover, self.deflate = sock, leftover, deflate


def new_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def open_connections(port, n, deflate=False, raw_tcp=False, batch=100, timeout=30.0):
    """Open n connections (with the WebSocket handshake unless raw_tcp), batch by batch.

    Batches keep the listen backlog from overflowing while still letting the server
    work on many handshakes at once.
    """
    deadline = time.monotonic() + timeout
    opened = []
    while len(opened) < n:
        pending = []
        for _ in range(min(batch, n - len(opened))):
            sock = new_socket()
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.connect((HOST, port))
            if raw_tcp:
                opened.append(Opened(sock))
                continue
            request, accept = handshake_request(HOST, port, "/", deflate)
            sock.sendall(request)
            pending.append((sock, accept))
        for sock, accept in pending:
            head, rest = read_head(sock, deadline)
            try:
                params = check_handshake_response(head, accept, deflate)
            except ProtocolError as exc:
                raise BenchError(f"bad handshake response: {exc}") from None
            opened.append(Opened(sock, rest, params))
    for conn in opened:
        conn.sock.setblocking(False)
    return opened


def close_all(socks, raw_tcp=False, timeout=3.0):
    """Close politely: send a close frame, read (and discard) until the server closes TCP.

    Returns how many connections the server closed cleanly within the timeout.  Used after
    the measurement, so it costs nothing that is measured; it keeps server logs free of
    'connection lost' noise, and a server that never finishes closing shows up here.
    """
    sel = selectors.DefaultSelector()
    frame = b"" if raw_tcp else close_frame(1000)
    for sock in socks:
        try:
            sock.setblocking(True)
            sock.settimeout(1.0)
            if raw_tcp:
                sock.shutdown(socket.SHUT_WR)
            else:
                sock.sendall(frame)
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        except OSError:
            sock.close()
    closed = 0
    deadline = time.monotonic() + timeout
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(0.1):
            try:
                data = key.fileobj.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                closed += 1
                sel.unregister(key.fileobj)
                key.fileobj.close()
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return closed


# --------------------------------------------------------------------------- what to send, what to expect

class Ring:
    """K precomputed messages for one connection: the bytes to send and the reply expected.

    send: frames laid out twice in a row, so that any run of up to K consecutive messages
    (wrapping around) is one contiguous slice.  expect: likewise, the exact reply bytes
    when every reply frame has the same length (the fast path); messages: the decoded
    (opcode, payload) replies, for the parser path.
    """

    def __init__(self, send_frames, messages, expect_frames=None):
        self.k = len(send_frames)
        self.send = b"".join(send_frames * 2)
        self.send_offsets = [0]
        for frame in send_frames * 2:
            self.send_offsets.append(self.send_offsets[-1] + len(frame))
        self.messages = messages
        self.frame_len = None
        if expect_frames and len({len(f) for f in expect_frames}) == 1:
            self.frame_len = len(expect_frames[0])
            self.expect = b"".join(expect_frames * 2)
            self.expect_len = self.k * self.frame_len

    def frames(self, first, n):
        """Bytes of messages first .. first+n-1 (n <= K)."""
        i = first % self.k
        return self.send[self.send_offsets[i]:self.send_offsets[i + n]]


def text_payload(conn_id, i, size):
    head = f"c{conn_id:04d} m{i:06d} "
    return (head + "abcdefghijklmnopqrstuvwxyz0123456789" * (size // 36 + 1))[:size].encode()


def binary_payload(conn_id, i, size):
    return random.Random(conn_id * 1000003 + i).randbytes(size)


def build_ring(conn_id, k, size, binary, deflate, raw_tcp):
    opcode = OP_BINARY if binary else OP_TEXT
    payloads = [(binary_payload if binary else text_payload)(conn_id, i, size) for i in range(k)]
    if deflate:
        send = [client_frame(opcode, deflate.compress(p), rsv1=True) for p in payloads]
    else:
        send = [client_frame(opcode, p) for p in payloads]
    messages = [(opcode, p) for p in payloads]
    if raw_tcp:
        expect = send  # a TCP echo returns exactly what it got
    elif deflate:
        expect = None  # compressed replies depend on the server's compressor: parse them
    else:
        expect = [server_frame(opcode, p) for p in payloads]
    return Ring(send, messages, expect)


class ReplyChecker:
    """Verifies everything one connection receives and counts complete messages.

    Fast path: compare the received bytes with the expected reply bytes at the current
    offset.  Slow path (from the first surprise on, for good): a FrameParser, and each
    message compared with the expected one.  `expected(i)` gives message i; `cyclic`
    says whether expected bytes repeat with period expect_len (a Ring) or are a one-off
    stream (a broadcast burst).
    """

    def __init__(self, expect_bytes, frame_len, expect_len, expected, cyclic, deflate=None, raw_tcp=False,
                 parser=None):
        self.expect_bytes, self.frame_len, self.expect_len = expect_bytes, frame_len, expect_len
        self.expected, self.cyclic, self.raw_tcp, self.deflate = expected, cyclic, raw_tcp, deflate
        self.rx = 0      # bytes verified on the fast path
        self.done = 0    # complete, verified messages
        # A parser may be handed over from a previous checker on the same connection: its
        # inflater must keep the server's compression context (context takeover).
        self.parser = parser if parser is not None else (None if frame_len else FrameParser(deflate))
        self.controls = []  # control frames received (pings need an answer)

    def feed(self, data):
        """Verify data; return the number of messages it completed."""
        if self.parser is None:
            if self._matches(data):
                self.rx += len(data)
                new = self.rx // self.frame_len - self.done
                self.done += new
                return new
            if self.raw_tcp:
                raise BenchError(f"TCP echo differs from what was sent, after {self.rx} good bytes")
            self._switch_to_parser()
        return self._parse(data)

    def _matches(self, data):
        n = len(data)
        if not self.cyclic:
            return data == self.expect_bytes[self.rx:self.rx + n]
        period = self.expect_len
        offset = self.rx % period
        pos = 0
        while pos < n:  # chunks of at most one period fit in the doubled ring
            take = min(n - pos, period)
            piece = data if take == n else data[pos:pos + take]
            if piece != self.expect_bytes[offset:offset + take]:
                return False
            pos += take
            offset = (offset + take) % period
        return True

    def _switch_to_parser(self):
        """Re-create the parser state at the last frame boundary: the verified bytes of a
        partly received frame are, by definition, the expected ones."""
        partial = self.rx % self.frame_len
        start = (self.rx - partial) % self.expect_len if self.cyclic else self.rx - partial
        self.parser = FrameParser(self.deflate)
        self.parser.feed(self.expect_bytes[start:start + partial])

    def _parse(self, data):
        try:
            items = self.parser.feed(data)
        except ProtocolError as exc:
            raise BenchError(f"protocol error from server: {exc}") from None
        new = 0
        for opcode, payload in items:
            if opcode >= 0x8:
                if opcode == OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    raise BenchError(f"server closed the connection unexpectedly (code {code}, {payload[2:]!r})")
                self.controls.append((opcode, payload))
                continue
            want = self.expected(self.done)
            if want is None:
                raise BenchError(f"unexpected extra message #{self.done}: {payload[:80]!r}")
            if (opcode, payload) != want:
                raise BenchError(
                    f"message #{self.done} is wrong: got opcode {opcode} {payload[:60]!r}... ({len(payload)} bytes), "
                    f"expected opcode {want[0]} {want[1][:60]!r}... ({len(want[1])} bytes)")
            self.done += 1
            new += 1
        return new


# --------------------------------------------------------------------------- one non-blocking connection

class Conn:
    """A non-blocking socket with a send queue, fed by the selectors loop."""

    def __init__(self, sock, sel):
        self.sock, self.sel = sock, sel
        self.out = b""  # bytes the kernel did not take yet
        sel.register(sock, selectors.EVENT_READ, self)

    def write(self, data):
        if self.out:
            self.out += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            raise BenchError(f"send failed: {exc}") from None
        if sent < len(data):
            self.out = data[sent:]
            self.sel.modify(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self)

    def on_writable(self):
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise BenchError(f"send failed: {exc}") from None
        self.out = self.out[sent:]
        if not self.out:
            self.sel.modify(self.sock, selectors.EVENT_READ, self)

    def receive(self):
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise BenchError(f"recv failed: {exc}") from None
        if not data:
            raise BenchError("server closed the TCP connection unexpectedly")
        return data

    def answer_pings(self, checker):
        for opcode, payload in checker.controls:
            if opcode == OP_PING:
                self.write(client_frame(OP_PONG, payload))
        checker.controls.clear()


class EchoConn(Conn):
    """Keeps `inflight` messages outstanding: every verified echo releases the next message."""

    def __init__(self, opened, sel, ring, inflight, raw_tcp, limit=None):
        super().__init__(opened.sock, sel)
        self.ring, self.inflight = ring, inflight
        self.sent = 0
        self.limit = limit  # stop sending after this many messages (None: never)
        self.progress_at = time.monotonic()
        self.progress_done = 0
        self.checker = ReplyChecker(
            ring.expect if ring.frame_len else None, ring.frame_len,
            ring.frame_len and ring.expect_len, lambda i: ring.messages[i % ring.k],
            cyclic=True, deflate=opened.deflate, raw_tcp=raw_tcp)
        self.leftover = opened.leftover

    @property
    def done(self):
        return self.checker.done

    def start(self):
        self.send_next(self.inflight)
        if self.leftover:
            self.handle(self.leftover)

    def send_next(self, n):
        if self.limit is not None:
            n = min(n, self.limit - self.sent)
        if n > 0:
            self.write(self.ring.frames(self.sent, n))
            self.sent += n

    def idle(self):
        """True once every message sent has been echoed and verified."""
        return self.done == self.sent and not self.out

    def check_progress(self, now):
        """Fail if this connection has waited STALL_TIMEOUT for an echo that never came."""
        if self.done != self.progress_done or self.idle():
            self.progress_done, self.progress_at = self.done, now
        elif now - self.progress_at > STALL_TIMEOUT:
            raise BenchError(
                f"no echo for {STALL_TIMEOUT:.0f} s with {self.sent - self.done} message(s) in flight: server stuck")

    def on_readable(self):
        data = self.receive()
        if data:
            self.handle(data)

    def handle(self, data):
        new = self.checker.feed(data)
        if self.checker.controls:
            self.answer_pings(self.checker)
        if new:
            self.send_next(new)


def drain(conns, sel, timeout=STALL_TIMEOUT):
    """Stop sending and wait for (and verify) every echo still in flight."""
    for c in conns:
        c.limit = c.sent
    deadline = time.monotonic() + timeout
    while not all(c.idle() for c in conns):
        if time.monotonic() > deadline:
            raise BenchError(f"echoes still missing {timeout:.0f} s after the window closed")
        loop_once(sel, 0.1)
    for c in conns:
        sel.unregister(c.sock)


def loop_once(sel, timeout):
    """One turn of the selectors loop; returns whether anything happened."""
    events = sel.select(timeout)
    for key, mask in events:
        conn = key.data
        if mask & selectors.EVENT_WRITE:
            conn.on_writable()
        if mask & selectors.EVENT_READ:
            conn.on_readable()
    return bool(events)


# --------------------------------------------------------------------------- scenarios

ECHO_SHAPES = {
    # scenario: (connections, messages in flight per connection, payload bytes, binary, ring size K)
    "small": (1, 1, 32, False, 256),
    "pipelined": (16, 32, 32, False, 256),
    "large": (1, 2, 1 << 20, True, 4),
}


def run_echo(args):
    conns_n, inflight, size, binary, k = ECHO_SHAPES[args.scenario]
    opened = open_connections(args.port, conns_n, deflate=args.deflate, raw_tcp=args.raw_tcp)
    if args.deflate and any(o.deflate is None for o in opened):
        close_all([o.sock for o in opened])
        return {"skip": "server did not accept the permessage-deflate offer"}
    sel = selectors.DefaultSelector()
    conns = []
    for conn_id, o in enumerate(opened):
        ring = build_ring(conn_id, k, size, binary, o.deflate, args.raw_tcp)
        conns.append(EchoConn(o, sel, ring, inflight, args.raw_tcp))
    t_measure = time.monotonic() + args.warmup
    t_end = t_measure + args.duration
    if conns_n == 1 and inflight == 1:
        s0, s1 = pingpong(conns[0], sel, t_measure, t_end, args.server_pid)
    else:
        s0, s1 = pipelined(conns, sel, t_measure, t_end, args.server_pid)
    drain(conns, sel)
    clean = close_all([c.sock for c in conns], raw_tcp=args.raw_tcp)
    scale = size / (1 << 20) if args.scenario == "large" else 1.0
    unit = {"small": "round trips/s", "pipelined": "messages/s", "large": "MiB/s"}[args.scenario]
    return measured(
        s0, s1, unit, scale, connections=conns_n, inflight=inflight, payload=size,
        parser_fallback=sum(1 for c in conns if c.checker.parser is not None and c.ring.frame_len),
        clean_closes=clean)


def pingpong(conn, sel, t_measure, t_end, server_pid):
    """One connection, one message at a time, on a blocking socket.

    A round trip is then exactly one send() and usually one recv() in the generator: no
    epoll_wait, which matters on machines where every system call is expensive, because in
    a ping-pong the generator's time is part of every round trip.  SO_RCVTIMEO bounds each
    wait in the kernel, so the loop cannot hang.
    """
    sock, checker = conn.sock, conn.checker
    sel.unregister(sock)
    sock.setblocking(True)
    timeout = struct.pack("ll", int(STALL_TIMEOUT), 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
    if conn.leftover:
        checker.feed(conn.leftover)
    s0 = None
    try:
        while True:
            now = time.monotonic()
            if s0 is None and now >= t_measure:
                s0 = Snapshot(checker.done, server_pid)
            if now >= t_end:
                return s0, Snapshot(checker.done, server_pid)
            sock.sendall(conn.ring.frames(conn.sent, 1))
            conn.sent += 1
            while checker.done < conn.sent:
                data = sock.recv(RECV_SIZE)
                if not data:
                    raise BenchError("server closed the TCP connection unexpectedly")
                checker.feed(data)
                for opcode, payload in checker.controls:
                    if opcode == OP_PING:
                        sock.sendall(client_frame(OP_PONG, payload))
                checker.controls.clear()
    except (BlockingIOError, TimeoutError):
        raise BenchError(f"no echo within {STALL_TIMEOUT:.0f} s: server stuck") from None
    finally:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, conn)


def pipelined(conns, sel, t_measure, t_end, server_pid):
    """Many connections, several messages in flight each, one selectors loop."""
    for conn in conns:
        conn.start()

    def total():
        return sum(c.done for c in conns)

    s0 = None
    next_check = 0.0
    while True:
        now = time.monotonic()
        if s0 is None and now >= t_measure:
            s0 = Snapshot(total(), server_pid)
        if now >= t_end:
            s1 = Snapshot(total(), server_pid)
            break
        loop_once(sel, min(0.1, t_end - now))
        if now >= next_check:  # the watchdog costs nothing measurable at 2 Hz
            next_check = now + 0.5
            for c in conns:
                c.check_progress(now)
    return s0, s1


class BroadcastClient(Conn):
    """A receive-only client that verifies each burst of broadcasts, in order."""

    def __init__(self, opened, sel):
        super().__init__(opened.sock, sel)
        self.deflate = opened.deflate
        self.pending = opened.leftover
        self.checker = None
        # Compressed broadcasts are parsed by one parser for the connection's whole life.
        self.parser = FrameParser(self.deflate) if self.deflate else None

    def expect_burst(self, burst):
        self.checker = ReplyChecker(
            None if self.deflate else burst.stream, None if self.deflate else burst.frame_len,
            None, burst.message, cyclic=False, deflate=self.deflate, parser=self.parser)
        if self.pending:
            data, self.pending = self.pending, b""
            self.handle(data)

    def on_readable(self):
        data = self.receive()
        if data:
            self.handle(data)

    def handle(self, data):
        if self.checker is None:
            raise BenchError(f"data before any broadcast was triggered: {data[:80]!r}")
        self.burst_received(self.checker.feed(data))
        if self.checker.controls:
            self.answer_pings(self.checker)

    def burst_received(self, new):
        pass  # replaced per burst by the counting closure in run_burst


class Burst:
    """What every client must receive after `GO n`: broadcast_message(0 .. n-1), in order."""

    def __init__(self, n):
        self.n = n
        self.payloads = [benchproto.broadcast_message(i).encode() for i in range(n)]
        frames = [server_frame(OP_TEXT, p) for p in self.payloads]
        self.frame_len = len(frames[0])
        self.stream = b"".join(frames)

    def message(self, i):
        return (OP_TEXT, self.payloads[i]) if i < self.n else None


def run_burst(clients, sel, n, server_pid, timeout):
    """Trigger one burst of n broadcasts and wait until every client has all of them.

    Returns the two snapshots bracketing it: from just before `GO n` is sent until the
    last client has received its last message.
    """
    burst = Burst(n)
    state = {"received": 0, "finished": 0}

    def counter(client):
        def burst_received(new):
            state["received"] += new
            if new and client.checker.done == n:
                state["finished"] += 1
        return burst_received

    for client in clients:
        client.burst_received = counter(client)
        client.expect_burst(burst)
    s0 = Snapshot(0, server_pid)
    clients[0].write(client_frame(OP_TEXT, f"{benchproto.GO_PREFIX}{n}".encode()))
    deadline = s0.time + timeout
    last_event = time.monotonic()
    while state["finished"] < len(clients):
        now = time.monotonic()
        if now > deadline or now - last_event > STALL_TIMEOUT:
            raise BenchError(
                f"broadcast of {n} messages to {len(clients)} clients incomplete after {now - s0.time:.1f} s: "
                f"{state['received']} of {n * len(clients)} delivered, {state['finished']} clients complete")
        if loop_once(sel, 0.1):
            last_event = now
    return s0, Snapshot(state["received"], server_pid)


def run_broadcast(args):
    opened = open_connections(args.port, args.clients, deflate=args.deflate)
    if args.deflate and any(o.deflate is None for o in opened):
        close_all([o.sock for o in opened])
        return {"skip": "server did not accept the permessage-deflate offer"}
    sel = selectors.DefaultSelector()
    clients = [BroadcastClient(o, sel) for o in opened]
    # Give the server a moment to finish registering the last connections it accepted.
    time.sleep(0.2)
    # Warm-up burst: also checks that every connection gets every message, and calibrates n
    # so that the measured burst lasts about args.duration seconds.
    warm = max(2, int(20 * args.warmup))
    s0, s1 = run_burst(clients, sel, warm, args.server_pid, timeout=30)
    per_second = warm * len(clients) / max(1e-3, s1.time - s0.time)
    n = max(10, min(100_000, int(per_second * args.duration / len(clients))))
    s0, s1 = run_burst(clients, sel, n, args.server_pid, timeout=max(15, 6 * args.duration))
    clean = close_all([c.sock for c in clients])
    return measured(s0, s1, "deliveries/s", clients=len(clients), messages_per_client=n, clean_closes=clean)


def run_memory(args):
    # Warm-up: one full connection life, so that lazily imported or allocated machinery
    # (handshake parsing, frame codec, compression tables...) is already in the "before".
    warm = open_connections(args.port, 1)
    conn = warm[0]
    conn.sock.setblocking(True)
    conn.sock.sendall(client_frame(OP_TEXT, b"warm-up"))
    conn.sock.settimeout(5)
    if conn.sock.recv(1024) != server_frame(OP_TEXT, b"warm-up"):
        raise BenchError("warm-up echo failed")
    close_all([conn.sock])
    time.sleep(0.3)
    before = proc_rss_kib(args.server_pid)
    t0 = time.monotonic()
    opened = open_connections(args.port, args.connections, timeout=60)
    opening = time.monotonic() - t0
    time.sleep(args.settle)  # let the server's handler tasks start and settle
    after = proc_rss_kib(args.server_pid)
    # Prove the connections are alive and served (a server that accepted and then dropped
    # them would look cheap): every one must echo a message.
    check_alive(opened)
    clean = close_all([o.sock for o in opened], timeout=10)
    return {
        "value": (after - before) / len(opened), "unit": "KiB/conn",
        "gen_cpu": None, "srv_cpu": None, "bg_cpu": None, "srv_us_per_op": None,
        "details": {"connections": len(opened), "rss_before_kib": before, "rss_after_kib": after,
                    "open_seconds": round(opening, 3), "clean_closes": clean},
    }


def check_alive(opened, timeout=20.0):
    sel = selectors.DefaultSelector()
    conns = [EchoConn(o, sel, build_ring(conn_id, 1, 32, False, None, False), 1, False, limit=1)
             for conn_id, o in enumerate(opened)]
    for c in conns:
        c.start()
    try:
        drain(conns, sel, timeout)
    except BenchError:
        missing = sum(1 for c in conns if not c.idle())
        raise BenchError(f"{missing} of {len(conns)} idle connections did not echo within {timeout:.0f} s") from None


class ChurnClient(Conn):
    """Open, handshake, close handshake, wait for the server to close TCP; repeat."""

    def __init__(self, port, sel, stats):
        self.port, self.sel, self.stats = port, sel, stats
        self.active = True
        self.begin()

    def begin(self):
        self.sock = new_socket()
        self.sock.setblocking(False)
        err = self.sock.connect_ex((HOST, self.port))
        if err not in (0, errno.EINPROGRESS):
            raise BenchError(f"connect failed: {os.strerror(err)}")
        self.out = b""
        self.head = b""
        self.state = "connect"
        self.since = time.monotonic()
        self.sel.register(self.sock, selectors.EVENT_WRITE, self)

    def on_writable(self):
        if self.state != "connect":
            return super().on_writable()
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise BenchError(f"connect failed: {os.strerror(err)}")
        request, self.accept = handshake_request(HOST, self.port)
        self.state = "handshake"
        self.sel.modify(self.sock, selectors.EVENT_READ, self)
        self.write(request)

    def on_readable(self):
        data = self.receive_or_eof()
        if data is None:
            return
        if data == b"" and self.state != "eof":
            raise BenchError(f"server closed TCP in state {self.state!r}")
        if self.state == "handshake":
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, _, rest = self.head.partition(b"\r\n\r\n")
            try:
                check_handshake_response(head, self.accept, False)
            except ProtocolError as exc:
                raise BenchError(f"bad handshake response: {exc}") from None
            self.parser = FrameParser()
            self.state = "closing"
            self.write(close_frame(1000))
            data = rest
        if self.state == "closing":
            self.expect_close(data)
        elif self.state == "eof":
            if data != b"":
                raise BenchError(f"data after the close frame: {data[:80]!r}")
            self.finish()

    def receive_or_eof(self):
        try:
            return self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        except ConnectionResetError:
            raise BenchError(f"connection reset by server in state {self.state}") from None

    def expect_close(self, data):
        try:
            items = self.parser.feed(data)
        except ProtocolError as exc:
            raise BenchError(f"protocol error from server: {exc}") from None
        for opcode, payload in items:
            if opcode != OP_CLOSE:
                raise BenchError(f"expected a close frame, got opcode {opcode}")
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            if code != 1000:
                raise BenchError(f"server answered close 1000 with close code {code}")
            self.state = "eof"
        if self.state == "eof" and self.parser.buf:
            raise BenchError("data after the close frame")

    def finish(self):
        self.sel.unregister(self.sock)
        self.sock.close()
        self.stats["done"] += 1
        if self.active:
            self.begin()

    def check_stuck(self, now):
        if now - self.since > STALL_TIMEOUT:
            raise BenchError(f"a connection spent {STALL_TIMEOUT:.0f} s in state {self.state!r}")


def run_churn(args):
    sel = selectors.DefaultSelector()
    stats = {"done": 0}
    clients = [ChurnClient(args.port, sel, stats) for _ in range(args.parallel)]
    t_measure = time.monotonic() + args.warmup
    t_end = t_measure + args.duration
    s0 = None
    next_check = 0.0
    while True:
        now = time.monotonic()
        if s0 is None and now >= t_measure:
            s0 = Snapshot(stats["done"], args.server_pid)
        if now >= t_end:
            s1 = Snapshot(stats["done"], args.server_pid)
            break
        loop_once(sel, min(0.1, t_end - now))
        if now >= next_check:
            next_check = now + 0.5
            for c in clients:
                c.check_stuck(now)
    # Let the connections in progress finish (bounded), so the server is left idle.
    for c in clients:
        c.active = False
    deadline = time.monotonic() + 3
    while sel.get_map() and time.monotonic() < deadline:
        loop_once(sel, 0.1)
    return measured(s0, s1, "connections/s", parallel=args.parallel)


SCENARIOS = {
    "small": run_echo, "pipelined": run_echo, "large": run_echo,
    "broadcast": run_broadcast, "memory": run_memory, "churn": run_churn,
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--server-pid", type=int, required=True, help="for CPU time and RSS, read from /proc")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--deflate", action="store_true", help="offer permessage-deflate, send compressed frames")
    p.add_argument("--raw-tcp", action="store_true", help="no WebSocket handshake: the server is a TCP echo")
    p.add_argument("--clients", type=int, default=1000, help="broadcast: connected clients")
    p.add_argument("--connections", type=int, default=2000, help="memory: idle connections")
    p.add_argument("--settle", type=float, default=0.5, help="memory: seconds before reading RSS")
    p.add_argument("--parallel", type=int, default=8, help="churn: parallel clients")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    benchproto.raise_nofile_limit()
    try:
        result = SCENARIOS[args.scenario](args)
    except (BenchError, OSError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

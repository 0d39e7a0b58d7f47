"""A deliberately small WebSocket client over a raw socket, for conformance tests.

It knows nothing about "correct" use: it builds whatever frame the test asks for
(any opcode, RSV bits, FIN, masked or not, any length encoding), writes it in one
or several TCP writes, and parses what the server sends back *strictly*, so that
every server frame is itself checked against RFC 6455:

* server frames are never masked (RFC 6455 section 5.1),
* RSV bits are 0 because no extension is negotiated (5.2),
* opcodes are defined ones (5.2), control frames are final and <= 125 bytes (5.5),
* payload lengths use the minimal encoding and the 64-bit form has its top bit 0 (5.2).

Standard library only: socket, base64, hashlib, os, struct.
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import shlex
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"   # RFC 6455 section 1.3

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
OPCODE_NAMES = {CONT: "CONT", TEXT: "TEXT", BINARY: "BINARY", CLOSE: "CLOSE", PING: "PING", PONG: "PONG"}
RSV1, RSV2, RSV3 = 4, 2, 1          # values of the `rsv` argument (bits 6, 5, 4 of byte 0)

TIMEOUT = 5.0                       # every wait in the tests is bounded by this (seconds)
SEND_CHUNK = 1 << 20                # sendall() timeouts cover the whole call, so send in chunks


def accept_for(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2, item 5.4)."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode("ascii")


def opname(opcode: int) -> str:
    return OPCODE_NAMES.get(opcode, f"0x{opcode:X}")


def short(data: bytes, limit: int = 40) -> str:
    """A bounded repr for assertion messages (payloads can be 16 MiB)."""
    if len(data) <= limit:
        return repr(bytes(data))
    return f"{bytes(data[:limit])!r}... ({len(data)} bytes)"


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """XOR payload with the 4-byte masking key (RFC 6455 section 5.3), fast for large payloads."""
    n = len(payload)
    if n == 0:
        return b""
    full = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(full, "little")).to_bytes(n, "little")


def build_header(opcode: int, length: int, *, fin: bool = True, rsv: int = 0, mask: bool = True,
                 mask_key: bytes | None = None, length_form: int | None = None) -> tuple[bytes, bytes]:
    """Frame header bytes and the masking key used (b"" when unmasked).

    length_form: None picks the minimal encoding; 7, 16 or 64 forces the 7-bit,
    16-bit (126) or 64-bit (127) form, even a non-minimal one. `length` may be any
    value that fits the form, including 64-bit values with the top bit set.
    """
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask else 0
    if length_form is None:
        length_form = 7 if length < 126 else 16 if length < 65536 else 64
    if length_form == 7:
        if length > 125:
            raise ValueError("7-bit length form holds 0..125")
        header = struct.pack("!BB", b0, mbit | length)
    elif length_form == 16:
        header = struct.pack("!BBH", b0, mbit | 126, length)
    elif length_form == 64:
        header = struct.pack("!BBQ", b0, mbit | 127, length)
    else:
        raise ValueError(f"bad length_form {length_form}")
    key = b""
    if mask:
        key = mask_key if mask_key is not None else os.urandom(4)
        header += key
    return header, key


def build_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = True,
                mask_key: bytes | None = None, length_form: int | None = None) -> bytes:
    """One complete client frame as bytes (masked unless mask=False)."""
    header, key = build_header(opcode, len(payload), fin=fin, rsv=rsv, mask=mask,
                               mask_key=mask_key, length_form=length_form)
    return header + (mask_bytes(payload, key) if mask else bytes(payload))


def fragments(opcode: int, payload: bytes, size: int) -> bytes:
    """A whole message cut into frames of `size` payload bytes (first opcode, then CONT)."""
    if size <= 0:
        raise ValueError("size must be positive")
    chunks = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
    out = []
    for i, chunk in enumerate(chunks):
        out.append(build_frame(opcode if i == 0 else CONT, chunk, fin=(i == len(chunks) - 1)))
    return b"".join(out)


def close_payload(code: int | None = None, reason: bytes | str = b"") -> bytes:
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return struct.pack("!H", code) + reason


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    def __repr__(self) -> str:
        return (f"Frame({opname(self.opcode)}, fin={self.fin}, rsv={self.rsv}, "
                f"payload={short(self.payload)})")

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None


class ServerClosed(AssertionError):
    """The server closed the TCP connection when the test expected more."""


class RawWS:
    """One client connection. All reads are bounded by `timeout` seconds of silence."""

    def __init__(self, sock: socket.socket, *, timeout: float = TIMEOUT, leftover: bytes = b""):
        self.sock = sock
        self.timeout = timeout
        self.buf = bytearray(leftover)
        self.response_headers: dict[str, str] = {}
        self.sock.settimeout(timeout)

    # ---------------------------------------------------------------- opening

    @classmethod
    def connect(cls, host: str, port: int, path: str = "/", *, timeout: float = TIMEOUT,
                extra_headers: list[tuple[str, str]] | None = None) -> "RawWS":
        """TCP connect plus an opening handshake (RFC 6455 section 4.1) that is checked strictly."""
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in (extra_headers or [])]
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
            status, reason, headers, rest = read_http_head(sock)
        except BaseException:
            sock.close()
            raise
        ws = cls(sock, timeout=timeout, leftover=rest)
        ws.response_headers = headers
        try:
            assert status == 101, f"handshake: expected 101, got {status} {reason} {headers}"
            assert headers.get("upgrade", "").lower() == "websocket", \
                f"handshake: Upgrade header must be 'websocket' (4.2.2 item 5.2), got {headers}"
            assert "upgrade" in [t.strip().lower() for t in headers.get("connection", "").split(",")], \
                f"handshake: Connection header must contain 'Upgrade' (4.2.2 item 5.3), got {headers}"
            assert headers.get("sec-websocket-accept") == accept_for(key), \
                f"handshake: wrong Sec-WebSocket-Accept (4.2.2 item 5.4): {headers}"
            assert "sec-websocket-extensions" not in headers, \
                f"handshake: extension accepted although none was offered (9.1): {headers}"
            assert "sec-websocket-protocol" not in headers, \
                f"handshake: subprotocol selected although none was offered (4.2.2): {headers}"
        except BaseException:
            ws.close_socket()
            raise
        return ws

    # ---------------------------------------------------------------- sending

    def send_raw(self, data: bytes) -> None:
        """Write bytes; big writes go in 1 MiB sendall() calls so each is bounded by the timeout."""
        view = memoryview(data)
        for i in range(0, len(view), SEND_CHUNK):
            self.sock.sendall(view[i:i + SEND_CHUNK])

    def send_frame(self, opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0,
                   mask: bool = True, *, length_form: int | None = None) -> bytes:
        frame = build_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, length_form=length_form)
        self.send_raw(frame)
        return frame

    def send_split(self, data: bytes, sizes: int | list[int]) -> None:
        """Write `data` in several separate sendall() calls (TCP_NODELAY is on).

        sizes: an int (every write that many bytes) or a list of write sizes (the
        remainder, if any, is written last).
        """
        if isinstance(sizes, int):
            sizes = [sizes] * ((len(data) + sizes - 1) // sizes)
        pos = 0
        for n in sizes:
            if pos >= len(data):
                break
            self.sock.sendall(data[pos:pos + n])
            pos += n
        if pos < len(data):
            self.sock.sendall(data[pos:])

    def send_close(self, code: int | None = None, reason: bytes | str = b"") -> None:
        self.send_frame(CLOSE, close_payload(code, reason))

    # ---------------------------------------------------------------- receiving

    def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(max(65536, n - len(self.buf)))
            except socket.timeout:
                raise AssertionError(f"timeout: nothing from the server for {self.timeout} s "
                                     f"(have {len(self.buf)} of {n} bytes needed)") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ServerClosed(f"server closed the TCP connection "
                                   f"(have {len(self.buf)} of {n} bytes needed)")
            self.buf += chunk

    def _take(self, n: int) -> bytes:
        self._fill(n)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def recv_frame(self) -> Frame:
        """One server frame, checked against the framing rules for a server (see module doc)."""
        b0, b1 = self._take(2)
        fin, rsv, opcode = bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF
        masked, length = bool(b1 & 0x80), b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._take(2))[0]
            assert length >= 126, f"server used the 16-bit length form for {length} bytes (5.2: minimal)"
        elif length == 127:
            length = struct.unpack("!Q", self._take(8))[0]
            assert length < 1 << 63, "server sent a 64-bit length with the top bit set (5.2)"
            assert length >= 65536, f"server used the 64-bit length form for {length} bytes (5.2: minimal)"
        assert not masked, "server sent a masked frame (5.1: a server MUST NOT mask)"
        assert rsv == 0, f"server set RSV bits {rsv:03b} without a negotiated extension (5.2)"
        assert opcode in OPCODE_NAMES, f"server used reserved opcode 0x{opcode:X} (5.2)"
        if opcode >= 0x8:
            assert fin, f"server fragmented a control frame {opname(opcode)} (5.5)"
            assert length <= 125, f"server control frame {opname(opcode)} has {length} bytes (5.5)"
        return Frame(fin, rsv, opcode, self._take(length))

    def recv_message(self) -> tuple[int, bytes]:
        """The next data message (opcode, payload), reassembling fragments.

        PINGs and PONGs from the server are skipped; a CLOSE is an assertion failure.
        """
        opcode, parts = None, []
        while True:
            frame = self.recv_frame()
            if frame.opcode in (PING, PONG):
                continue
            if frame.opcode == CLOSE:
                raise AssertionError(f"expected a data message, got CLOSE code={frame.close_code} "
                                     f"payload={short(frame.payload)}")
            if opcode is None:
                assert frame.opcode != CONT, "server sent CONT without a message in progress (5.4)"
                opcode = frame.opcode
            else:
                assert frame.opcode == CONT, \
                    f"server sent {opname(frame.opcode)} inside a fragmented message (5.4)"
            parts.append(frame.payload)
            if frame.fin:
                return opcode, b"".join(parts)

    def expect_message(self, opcode: int, payload: bytes) -> None:
        got_op, got = self.recv_message()
        assert got_op == opcode, f"expected a {opname(opcode)} message, got {opname(got_op)} {short(got)}"
        if got != payload:
            n = next((i for i, (a, b) in enumerate(zip(got, payload)) if a != b), min(len(got), len(payload)))
            raise AssertionError(f"echo differs: expected {len(payload)} bytes, got {len(got)}; first "
                                 f"difference at byte {n}: expected {short(payload[n:n + 16])}, "
                                 f"got {short(got[n:n + 16])}")

    def expect_close(self, *codes: int | None, reply: bool = True) -> tuple[int | None, bytes]:
        """Read until a CLOSE frame, check its status code, then check the server closes TCP.

        codes: the acceptable status codes; None stands for "close frame with no payload".
        Any data frame before the CLOSE is a failure. PING/PONG are skipped.
        reply: answer with a CLOSE first, as a client must (5.5.1), unless the test is in
        the middle of a frame (then the server must close without our reply).
        Afterwards the server must close the TCP connection first (7.1.1, 5.5.1) within
        the timeout: recv() returns b'' (a reset also counts), and no byte follows the
        CLOSE frame (5.5.1: nothing may be sent after a close frame).
        """
        while True:
            try:
                frame = self.recv_frame()
            except ServerClosed as exc:
                raise AssertionError(f"expected CLOSE {codes}, but the server closed TCP without "
                                     f"a close frame ({exc})") from None
            if frame.opcode in (PING, PONG):
                continue
            if frame.opcode == CLOSE:
                break
            raise AssertionError(f"expected CLOSE {codes}, got a data frame first: {frame!r}")
        payload = frame.payload
        assert len(payload) != 1, "server close frame has a 1-byte payload (5.5.1)"
        code = frame.close_code
        reason = payload[2:]
        try:
            reason.decode("utf-8")
        except UnicodeDecodeError:
            raise AssertionError(f"server close reason is not UTF-8 (5.5.1): {reason!r}") from None
        assert code in codes, f"expected close code {' or '.join(map(str, codes))}, got {code} " \
                              f"(reason {reason!r})"
        if reply:
            try:
                self.sock.sendall(build_frame(CLOSE, payload[:2]))
            except OSError:
                pass                 # the server may already be gone; that is its right after failing
        self.expect_tcp_closed()
        return code, reason

    def expect_tcp_closed(self) -> None:
        """The server closes the TCP connection within the timeout, sending nothing more."""
        extra = bytes(self.buf)
        deadline = time.monotonic() + self.timeout
        while not extra:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError(f"the server did not close the TCP connection within "
                                     f"{self.timeout} s after the close frame (7.1.1)") from None
            except ConnectionResetError:
                return
            finally:
                self.sock.settimeout(self.timeout)
            if not chunk:
                return
            extra += chunk
        raise AssertionError(f"server sent bytes after its close frame (5.5.1): {short(extra)}")

    def close_socket(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# -------------------------------------------------------------------- plain HTTP

def read_http_head(sock: socket.socket, limit: int = 65536) -> tuple[int, str, dict[str, str], bytes]:
    """Read an HTTP response head: (status, reason, lower-cased headers, bytes after the head)."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            raise AssertionError(f"timeout waiting for the HTTP response head; got {data!r}") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise AssertionError(f"connection closed before a complete HTTP response head; got {data!r}")
        data += chunk
        if len(data) > limit:
            raise AssertionError("HTTP response head too large")
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert len(parts) >= 2 and parts[0].startswith("HTTP/1."), f"bad status line {lines[0]!r}"
    status, reason = int(parts[1]), (parts[2] if len(parts) > 2 else "")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return status, reason, headers, rest


def http_request(host: str, port: int, request: bytes, *, timeout: float = TIMEOUT
                 ) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes, return (status, headers, body read so far up to Content-Length)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        status, _, headers, body = read_http_head(sock)
        want = int(headers.get("content-length", "0") or 0)
        while len(body) < want:
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            body += chunk
        return status, headers, body


# -------------------------------------------------------------------- server process

class EchoServer:
    """`python3 -m common echo --host 127.0.0.1 --port 0 [...]` as a subprocess.

    The port is read from the line `listening on ws://HOST:PORT` with a bounded wait.
    stdout keeps being drained by a thread (so logging can never block the server);
    stderr goes to a temporary file shown when startup fails.
    The environment variable WSLAB_ECHO_CMD replaces `python3 -m common echo`
    (e.g. to run this suite against a student's server that takes the same options).
    """

    def __init__(self, repo_root: Path, extra_args: list[str] | None = None, startup_timeout: float = 15.0):
        base = shlex.split(os.environ.get("WSLAB_ECHO_CMD", "")) or [sys.executable, "-m", "common", "echo"]
        self.cmd = base + ["--host", "127.0.0.1", "--port", "0"] + (extra_args or [])
        self.stderr = tempfile.TemporaryFile()
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(self.cmd, cwd=repo_root, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self.stderr,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.drainer = threading.Thread(target=self._drain, daemon=True)
        self.drainer.start()
        self.host, self.port = "127.0.0.1", None
        deadline = time.monotonic() + startup_timeout
        try:
            while self.port is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(f"{self.cmd}: no 'listening on' line within {startup_timeout} s")
                try:
                    line = self.lines.get(timeout=remaining)
                except queue.Empty:
                    continue
                if line is None:
                    raise RuntimeError(f"{self.cmd} exited with {self.proc.wait(timeout=TIMEOUT)} "
                                       f"before listening")
                if "listening on ws://" in line:
                    hostport = line.split("ws://", 1)[1].strip().rstrip("/")
                    self.port = int(hostport.rsplit(":", 1)[1])
        except BaseException as exc:
            self.kill()
            message = (f"{exc}\nstdout: {''.join(self.output)[-2000:]}\n"
                       f"stderr: {self.stderr_text()[-4000:]}")
            self.stop()
            raise RuntimeError(message) from None

    def _drain(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace")
            if len(self.output) < 1000:
                self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        self.drainer.join(timeout=TIMEOUT)

    def __enter__(self) -> "EchoServer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Always kills the server (it has no graceful-stop contract) and frees the pipes."""
        self.kill()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.stderr.close()

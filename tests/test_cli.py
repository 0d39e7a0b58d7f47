"""The command line, `python3 -m common echo|client`, run as subprocesses from the repository root.

Every wait is bounded: output is collected by reader threads and tests wait
for a line to appear (or the process to exit) with a timeout, never a sleep.
Every process started is killed on the way out if it is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import common
from common import __main__ as cli
from common import runner
from common.explain import explain

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0
ASYNCIO_NOISE = "Using selector"


class Process:
    """A `python3 -m common ...` subprocess whose stdout and stderr are read as they come."""

    def __init__(self, *args: str, stdin: int = subprocess.PIPE, python: tuple[str, ...] = ("-m", "common")) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *python, *args],
            cwd=REPO,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._text = {"stdout": "", "stderr": ""}
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._drain, args=(name, getattr(self.proc, name)), daemon=True)
            for name in self._text
        ]
        for reader in self._readers:
            reader.start()

    def _drain(self, name: str, stream) -> None:
        for raw in iter(stream.readline, b""):
            with self._changed:
                self._text[name] += raw.decode("utf-8", "replace")
                self._changed.notify_all()
        stream.close()

    @property
    def stdout(self) -> str:
        with self._changed:
            return self._text["stdout"]

    @property
    def stderr(self) -> str:
        with self._changed:
            return self._text["stderr"]

    def wait_for(self, text: str, stream: str = "stderr", timeout: float = TIMEOUT) -> str:
        """Wait until `text` was printed on `stream`; return everything printed there so far."""
        with self._changed:
            if not self._changed.wait_for(lambda: text in self._text[stream], timeout=timeout):
                raise AssertionError(f"{text!r} not printed on {stream} within {timeout} s:\n{self._text}")
            return self._text[stream]

    def write(self, data: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data.encode())
        self.proc.stdin.flush()

    def finish(self, timeout: float = TIMEOUT) -> int:
        """Close stdin, wait for the exit and for the output to be read; return the exit status."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        status = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=timeout)
        return status

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(BrokenPipeError, OSError):
            self.finish()


@contextlib.contextmanager
def running(*args: str, stdin: int = subprocess.PIPE, python: tuple[str, ...] = ("-m", "common")) -> Iterator[Process]:
    """Start `python3 -m common *args` (or `python3 *python *args`); always kill it on the way out."""
    process = Process(*args, stdin=stdin, python=python)
    try:
        yield process
    finally:
        process.kill()


@contextlib.contextmanager
def echo_server(*args: str, python: tuple[str, ...] = ("-m", "common")) -> Iterator[tuple[Process, str]]:
    """`python3 -m common [args] --port 0` (args include "echo"), and its ws:// URL once it listens."""
    with running(*args, "--port", "0", stdin=subprocess.DEVNULL, python=python) as server:
        line = server.wait_for("listening on ws://", stream="stdout").strip().splitlines()[-1]
        yield server, line.split("listening on ", 1)[1]


@contextlib.contextmanager
def silent_server() -> Iterator[socket.socket]:
    """A TCP listener on 127.0.0.1 that never answers the opening handshake."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        yield listener


def url_of(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"ws://{host}:{port}/"


# ----------------------------------------------------------------- the wire view (-v)

VERBOSE_POSITIONS = {
    "before the command": lambda command: ["-v", command],
    "after the command": lambda command: [command, "-v"],
    "long form after the command": lambda command: [command, "--verbose"],
}


@pytest.mark.parametrize("position", VERBOSE_POSITIONS)
def test_client_verbose_shows_frames_and_no_asyncio_noise(position: str) -> None:
    """client with -v, before or after the command, logs each frame and nothing from asyncio."""
    with echo_server("echo") as (_, url):
        with running(*VERBOSE_POSITIONS[position]("client"), url) as client:
            client.write("hello\n")
            assert client.finish() == 0, client.stderr
    assert "< hello" in client.stdout
    assert "> TEXT 'hello'" in client.stderr
    assert "< TEXT 'hello'" in client.stderr
    assert "= connection is OPEN" in client.stderr
    assert ASYNCIO_NOISE not in client.stderr
    assert "Traceback" not in client.stderr


def test_client_without_verbose_logs_no_frames() -> None:
    """client without -v prints the messages only: no frame lines, no asyncio lines."""
    with echo_server("echo") as (_, url):
        with running("client", url) as client:
            client.write("hello\n")
            assert client.finish() == 0, client.stderr
    assert "< hello" in client.stdout
    assert "TEXT" not in client.stderr
    assert ASYNCIO_NOISE not in client.stderr


@pytest.mark.parametrize("position", VERBOSE_POSITIONS)
def test_echo_verbose_shows_frames_and_no_asyncio_noise(position: str) -> None:
    """echo with -v, before or after the command, logs each frame and nothing from asyncio."""
    with echo_server(*VERBOSE_POSITIONS[position]("echo")) as (server, url):
        with running("client", url) as client:
            client.write("hello\n")
            assert client.finish() == 0, client.stderr
        server.wait_for("> TEXT 'hello'")
        server.wait_for("= connection is CLOSED")
        server.proc.send_signal(signal.SIGINT)
        assert server.finish() == 0
    assert "< TEXT 'hello'" in server.stderr
    assert ASYNCIO_NOISE not in server.stderr
    assert "Traceback" not in server.stderr


def echo_session_log(verbose: str) -> str:
    """What `echo` with -v or -vv logs while the client sends "hello" and leaves, until Ctrl+C."""
    with echo_server("echo", verbose) as (server, url):
        with running("client", url) as client:
            client.write("hello\n")
            assert client.finish() == 0, client.stderr
        server.wait_for("= connection is CLOSED")
        server.proc.send_signal(signal.SIGINT)
        assert server.finish() == 0
    return server.stderr


def test_echo_vv_shows_the_handshake_and_frame_bytes_that_explain_reads() -> None:
    """echo -vv: the request and status lines, every header, and each frame's bytes in hex, which
    ``explain`` turns back into the message; the close handshake and the end of TCP in words."""
    stderr = echo_session_log("-vv")
    log = [line.split(" ", 3)[-1] for line in stderr.splitlines()]  # after the time and the peer
    assert any(line.startswith("< GET / HTTP/1.1") for line in log)
    assert any(line.startswith("> HTTP/1.1 101 Switching Protocols") for line in log)
    assert any(line.strip().startswith("Sec-WebSocket-Key: ") for line in log)
    received = log[log.index(next(line for line in log if line.startswith("< TEXT 'hello'"))) + 1]
    assert received.strip().startswith("frame 81 85 ")  # masked by the client: FIN, text, MASK, 5 bytes
    explained = explain(received.strip().removeprefix("frame "))
    assert "from the client" in explained and "=> message: text 'hello' (5 bytes)" in explained
    sent = log[log.index(next(line for line in log if line.startswith("> TEXT 'hello'"))) + 1]
    assert sent.strip() == "frame 81 05 68 65 6c 6c 6f"
    assert "= the server closed TCP first" in log
    assert ("= connection is CLOSED: the client closed with 1000 (normal closure); "
            "the server answered with 1000 (normal closure)") in log


def test_echo_v_shows_no_frame_bytes() -> None:
    """-v is the wire view without the bytes: frame lines, no hex lines, no headers."""
    stderr = echo_session_log("-v")
    assert "< GET / HTTP/1.1" in stderr and "< TEXT 'hello'" in stderr
    assert " frame 81" not in stderr and "Sec-WebSocket-Key" not in stderr


def test_echo_without_verbose_logs_no_frames() -> None:
    """echo without -v logs nothing for a normal session."""
    with echo_server("echo") as (server, url):
        with running("client", url) as client:
            client.write("hello\n")
            assert client.finish() == 0, client.stderr
        server.proc.send_signal(signal.SIGINT)
        assert server.finish() == 0
    assert server.stderr == ""


def test_echo_selects_the_subprotocols_it_was_given() -> None:
    """echo --subprotocol: the first of its names that the client offers is selected; none if none matches."""
    async def selected(url: str, offered: list[str]) -> str | None:
        async with common.connect(url, subprotocols=offered) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            return ws.subprotocol

    with echo_server("echo", "--subprotocol", "chat.v2", "--subprotocol", "chat") as (server, url):
        assert asyncio.run(selected(url, ["chat", "chat.v2"])) == "chat.v2"    # the server's preference wins
        assert asyncio.run(selected(url, ["chat"])) == "chat"
        assert asyncio.run(selected(url, ["mqtt"])) is None
        server.proc.send_signal(signal.SIGINT)
        assert server.finish() == 0


def test_echo_says_why_it_closes_when_stopped() -> None:
    """SIGTERM: every connection is closed with 1001 and the reason "server shutting down"."""
    async def closed_by_server(url: str, server: Process) -> tuple[int | None, str | None]:
        async with common.connect(url) as ws:
            server.proc.send_signal(signal.SIGTERM)
            with pytest.raises(common.ConnectionClosedOK):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            return ws.close_code, ws.close_reason

    with echo_server("echo") as (server, url):
        assert asyncio.run(closed_by_server(url, server)) == (1001, "server shutting down")
        assert server.finish() == 0


@pytest.mark.parametrize("session", [False, True], ids=["no client", "after a client left"])
def test_echo_starts_and_stops_as_a_stage_does(session: bool) -> None:
    """echo says where it listens as the stages do (``ws://HOST:PORT/``, with the path), and on
    SIGINT exits at once with status 0 after ``server stopped``, with or without a client before."""
    with echo_server("echo") as (server, url):
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/") and not url.endswith("//")
        if session:
            with running("client", url) as client:
                client.write("hello\n")
                assert client.finish() == 0, client.stderr
            assert client.stdout == "< hello\n"
        server.proc.send_signal(signal.SIGINT)
        assert server.finish(timeout=TIMEOUT) == 0      # exits by itself; TIMEOUT only bounds a failure
    assert server.stdout.splitlines() == [f"listening on {url}", "server stopped"]
    assert server.stderr == ""


def test_echo_on_a_port_in_use_is_one_line_and_status_1() -> None:
    """A second echo server on the same port: ``error: ...`` on one line, status 1, as a stage."""
    with echo_server("echo") as (_, url):
        port = url.rstrip("/").rsplit(":", 1)[1]
        result = subprocess.run([sys.executable, "-m", "common", "echo", "--port", port], cwd=REPO,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1, result.stderr
    assert "bind" in result.stderr                      # asyncio: "error while attempting to bind on address ..."


def test_help_mentions_verbose_after_the_command() -> None:
    """--help says that -v also works after the command, and each command's help lists -v."""
    main_help = subprocess.run([sys.executable, "-m", "common", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=TIMEOUT)
    assert main_help.returncode == 0
    assert "client -v" in main_help.stdout
    for command in ("echo", "client"):
        sub_help = subprocess.run([sys.executable, "-m", "common", command, "--help"], cwd=REPO,
                                  capture_output=True, text=True, timeout=TIMEOUT)
        assert sub_help.returncode == 0
        assert "-v, --verbose" in sub_help.stdout


# ----------------------------------------------------------------- what the network sends, shown not obeyed

TITLE = "\x1b]0;pwned\x07"      # an xterm sequence that retitles the window
CLEAR = "\x1b[2J"               # clears the screen


def assert_inert(output: str) -> None:
    """Nothing in `output` can act on a terminal: every character printable, lines apart."""
    controls = sorted({char for char in output if not char.isprintable() and char != "\n"})
    assert not controls, f"control characters {controls} reach the terminal:\n{output}"


async def client_output(url: str, *options: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`python3 -m common [options] client URL`, its input left open and empty, until it leaves by
    itself (the server closed or refused): its exit status, stdout and stderr."""
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "common", *options, "client", url, cwd=REPO, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert client.stdin is not None and client.stdout is not None and client.stderr is not None
    try:
        out, err = await asyncio.wait_for(asyncio.gather(client.stdout.read(), client.stderr.read()), TIMEOUT)
        status = await asyncio.wait_for(client.wait(), TIMEOUT)
    finally:
        if client.returncode is None:
            client.kill()
            await client.wait()
        client.stdin.close()
    return status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def session_output(handler, *options: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The client's exit status, stdout and stderr against a server on 127.0.0.1 that runs `handler`."""
    async def session() -> tuple[int, str, str]:
        async with common.serve(handler, "127.0.0.1", 0) as server:
            host, port = server.sockets[0].getsockname()[:2]
            return await client_output(f"ws://{host}:{port}/", *options, env=env)
    return asyncio.run(session())


@pytest.mark.parametrize("verbose", [(), ("-v",)], ids=["plain", "wire view"])
@pytest.mark.parametrize(("code", "status"), [(1000, 0), (4000, 1)])
def test_client_shows_escapes_in_messages_and_close_reason(verbose, code, status) -> None:
    """Messages and a close reason holding ESC ] 0 ; ... BEL and ESC [ 2 J: the client shows them
    escaped (a message as its repr(), the reason inline) and the terminal receives no control byte;
    a 200-character message is shown whole, a 3000-character one cut, with its length."""
    async def handler(ws: common.ServerConnection) -> None:
        for message in (f"{TITLE}hello{CLEAR}", CLEAR.encode() + b"\x07", "y" * 200, "x" * 3000, "plain"):
            await ws.send(message)
        await ws.close(code, f"bye{TITLE}{CLEAR}")

    exit_status, out, err = session_output(handler, *verbose)
    assert exit_status == status, err
    assert_inert(out)
    assert_inert(err)
    assert out.splitlines() == [
        r"< '\x1b]0;pwned\x07hello\x1b[2J'",
        r"< b'\x1b[2J\x07'",
        "< " + "y" * 200,
        "< " + "x" * 1000 + "... (3000 characters)",
        "< plain",
    ]
    name = "normal closure" if code == 1000 else "application"
    assert rf"connection closed: received {code} ({name}), reason 'bye\x1b]0;pwned\x07\x1b[2J'" in err
    assert "Traceback" not in err


def test_client_close_line_quotes_the_reason_apart_from_the_code() -> None:
    """A server that refuses with 1008 and a reason (test4's): the client's last line names the code,
    then the reason quoted on its own, never run into the code's name."""
    reason = "the first message must be COMMS or DATA"

    async def handler(ws: common.ServerConnection) -> None:
        await ws.close(common.CloseCode.POLICY_VIOLATION, reason)

    status, out, err = session_output(handler)
    assert status == 1, err
    assert out == ""
    assert err.splitlines()[-1] == (f"connection closed: received 1008 (policy violation), reason '{reason}';"
                                    f" then sent 1008 (policy violation), reason '{reason}'")


def test_client_shows_a_refusal_escaped() -> None:
    """A 403 whose status line, header and body hold terminal escapes: the client's one line, and its
    wire view (-vv: the status line and headers), show them escaped; exit status 1."""
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = f"{TITLE}go away{CLEAR}\nsecond line\n".encode()
        writer.write(f"HTTP/1.1 403 No{TITLE}\r\nX-Why: {CLEAR}because\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    async def session() -> tuple[str, tuple[int, str, str]]:
        server = await asyncio.start_server(refuse, "127.0.0.1", 0)
        async with server:
            host, port = server.sockets[0].getsockname()[:2]
            url = f"ws://{host}:{port}/"
            return url, await client_output(url, "-vv")

    url, (status, out, err) = asyncio.run(session())
    assert status == 1
    assert out == ""
    assert_inert(err)
    assert (f"cannot connect to {url}: server rejected WebSocket connection: HTTP 403: "
            r"\x1b]0;pwned\x07go away\x1b[2J\nsecond line") in err
    assert r"< HTTP/1.1 403 No\x1b]0;pwned\x07" in err
    assert r"X-Why: \x1b[2Jbecause" in err
    assert "Traceback" not in err


def test_client_survives_text_its_output_cannot_encode() -> None:
    """Output that cannot encode what arrived (an ASCII console, a cp1252 pipe): escaped, no traceback."""
    async def handler(ws: common.ServerConnection) -> None:
        await ws.send("caf\u00e9 \u2603")
        await ws.close(1000, "\u00e0 bient\u00f4t")

    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    status, out, err = session_output(handler, env=env)
    assert status == 0, err
    assert out == "< caf\\xe9 \\u2603\n"
    assert "\\xe0 bient\\xf4t" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("message", "seen"), [
    ("hello", "hello"), ("", "''"), (" ", "' '"), ("a\nb", r"'a\nb'"), ("\u202eevil", r"'\u202eevil'"),
    ("\u00e9\U0001f600", "\u00e9\U0001f600"), (b"\x00\xff", r"b'\x00\xff'"),
    ("z" * 1000, "z" * 1000), ("z" * 1001, "z" * 1000 + "... (1001 characters)"),
    ("\x07" * 1001, repr("\x07" * 1000) + "... (1001 characters)"), (b"\x01" * 1001, repr(b"\x01" * 1000) + "... (1001 bytes)"),
], ids=["plain", "empty", "blank", "newline", "bidi override", "non-ASCII", "binary", "1000 characters",
        "1001 characters", "1001 BELs", "1001 bytes"])
def test_shown_renders_a_message_readable_and_inert(message, seen) -> None:
    """Plain text as it is; anything a terminal could act on as repr(); cut past MESSAGE_LIMIT with the length."""
    assert cli.shown(message) == seen


def test_escaped_escapes_control_characters_in_place() -> None:
    """Our own line around network text: only the text's control characters become escapes."""
    assert runner.escaped(f"reason {TITLE}ok\r\n\u00e9") == r"reason \x1b]0;pwned\x07ok\r\n" + "\u00e9"
    assert runner.escaped("q" * 1001, cli.MESSAGE_LIMIT) == "q" * 1000 + "... (1001 characters)"
    assert runner.escaped("q" * 1001) == "q" * 1001


def test_client_help_says_how_messages_are_shown() -> None:
    """client --help documents the escaping and the limit past which a message is cut."""
    result = subprocess.run([sys.executable, "-m", "common", "client", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert f"past {cli.MESSAGE_LIMIT} characters or bytes" in text
    assert "never obeyed" in text and "repr()" in text


# ----------------------------------------------------------------- usage errors

@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "required: {echo,client,explain,inspect}"),
        (("-v",), "required: {echo,client,explain,inspect}"),
        (("echo", "--port", "99999"), "argument --port: port must be 0-65535, not 99999"),
        (("echo", "--port", "-1"), "argument --port: port must be 0-65535, not -1"),
        (("echo", "--port", "http"), "argument --port: not a port number: 'http'"),
        (("echo", "--max-size", "0"), "argument --max-size: must be at least 1, not 0"),
        (("client",), "required: uri"),
    ],
)
def test_usage_error_is_a_clean_argparse_error(args: tuple[str, ...], message: str) -> None:
    """A missing command or a bad option value: usage and a one-line error, exit status 2, no traceback."""
    result = subprocess.run([sys.executable, "-m", "common", *args], cwd=REPO, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python3 -m common")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------- Ctrl+C

def test_ctrl_c_stops_echo_without_traceback() -> None:
    """SIGINT stops the echo server, with a client connected: exit status 0, no traceback."""
    with echo_server("echo") as (server, url):
        with running("client", url) as client:
            client.wait_for("connected to")
            server.proc.send_signal(signal.SIGINT)
            assert server.finish() == 0
            assert client.finish() == 0  # the server closed the connection normally
    assert "Traceback" not in server.stderr
    assert "Traceback" not in client.stderr


def test_ctrl_c_stops_connected_client_without_traceback() -> None:
    """SIGINT stops a connected client waiting for input: exit status 130, no traceback."""
    with echo_server("echo") as (_, url):
        with running("client", url) as client:
            client.wait_for("connected to")
            client.proc.send_signal(signal.SIGINT)
            assert client.finish() == 130
    assert "Traceback" not in client.stderr


def test_ctrl_c_stops_client_during_the_handshake_without_traceback() -> None:
    """SIGINT while the server has not answered the handshake: exit status 130, no traceback."""
    with silent_server() as listener, running("client", url_of(listener)) as client:
        connection, _ = listener.accept()  # the client is now waiting for the handshake response
        with connection:
            client.proc.send_signal(signal.SIGINT)
            assert client.finish() == 130
    assert "Traceback" not in client.stderr
    assert "cannot connect" not in client.stderr


#: `python3 -c WINDOWS_LOOP ARGS` runs `python3 -m common ARGS` with an event loop that cannot catch
#: signals, as asyncio's loops on Windows: Ctrl+C then raises KeyboardInterrupt (asyncio.run first
#: cancels the main task) instead of calling a handler.
WINDOWS_LOOP = """\
import asyncio, sys
def add_signal_handler(*args):
    raise NotImplementedError
asyncio.SelectorEventLoop.add_signal_handler = add_signal_handler
from common.__main__ import main
sys.exit(main())
"""


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT; on Windows this is the real case")
def test_ctrl_c_stops_echo_where_the_loop_cannot_catch_signals() -> None:
    """A loop without add_signal_handler (Windows): the echo server runs, and Ctrl+C still closes
    every connection with 1001 "server shutting down" and ends it with status 0, no traceback."""
    async def closed_by_ctrl_c(url: str, server: Process) -> tuple[int | None, str | None]:
        async with common.connect(url) as ws:
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hi"   # the connection is served
            server.proc.send_signal(signal.SIGINT)
            with pytest.raises(common.ConnectionClosedOK):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            return ws.close_code, ws.close_reason

    with echo_server("echo", python=("-c", WINDOWS_LOOP)) as (server, url):
        assert asyncio.run(closed_by_ctrl_c(url, server)) == (1001, "server shutting down")
        assert server.finish() == 0
    assert "Traceback" not in server.stderr
    assert server.stderr == ""
    assert server.stdout.splitlines()[-1] == "server stopped"


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT; on Windows this is the real case")
def test_ctrl_c_stops_client_where_the_loop_cannot_catch_signals() -> None:
    """The client installs no signal handler: with such a loop too, Ctrl+C ends it with 130, no traceback."""
    with echo_server("echo") as (_, url):
        with running("client", url, python=("-c", WINDOWS_LOOP)) as client:
            client.wait_for("connected to")
            client.proc.send_signal(signal.SIGINT)
            assert client.finish() == 130
    assert "Traceback" not in client.stderr


# ----------------------------------------------------------------- connection errors

def test_handshake_timeout_is_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A handshake that times out is reported as TimeoutError, not as an empty message."""
    monkeypatch.setattr(cli, "connect", functools.partial(common.connect, open_timeout=0.2))
    with silent_server() as listener:
        url = url_of(listener)
        assert asyncio.run(asyncio.wait_for(cli.run_client(url), TIMEOUT)) == 1
    assert capsys.readouterr().err == f"cannot connect to {url}: TimeoutError\n"


def test_refused_connection_is_reported() -> None:
    """Nothing listening: one line on stderr, exit status 1, no traceback."""
    with silent_server() as listener:
        url = url_of(listener)
    result = subprocess.run([sys.executable, "-m", "common", "client", url], cwd=REPO, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 1
    assert result.stderr.startswith(f"cannot connect to {url}: ")
    assert "Traceback" not in result.stderr

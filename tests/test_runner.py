"""common/runner.py: what every stage shares, tested once.

Plain function calls: argparse as the stages use it, files in tmp_path, the
start-up lines of a fake listening server, exit codes of runner.run() with
small coroutines, a SIGTERM sent to this process inside runner.run(). How
the stages use it all (each a subprocess) is in tests/test_stages.py and
tests/test_stage_tls.py.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from pathlib import Path

import pytest

from common import InvalidOrigin, runner
from common.connection import HEADER_BYTES
from common.server import ANSWERED

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def parser() -> argparse.ArgumentParser:
    """The --port option as every stage declares it."""
    parser = argparse.ArgumentParser(prog="server.py")
    parser.add_argument("--port", type=runner.port, default=5678)
    return parser


# ------------------------------------------------------------------ port


@pytest.mark.parametrize(("text", "expected"), [("0", 0), ("1", 1), ("80", 80), ("5678", 5678), ("65535", 65535),
                                                ("08080", 8080)])
def test_port_accepts_0_to_65535(text, expected):
    """A port number from 1 to 65535, or 0 (the system picks a free one)."""
    assert runner.port(text) == expected
    assert parser().parse_args(["--port", text]).port == expected


@pytest.mark.parametrize("text", ["65536", "99999", "100000", "-1", "-0", "", "abc", "5678.0", " 80", "80 ", "+80",
                                  "8_0", "0x50", "\u0668\u0660", "1e3", "000000"])
def test_port_refuses_anything_else(text):
    """Out of range, negative, not a plain decimal number: ArgumentTypeError, with what is allowed."""
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        runner.port(text)
    assert repr(text) in str(refused.value) and "1 to 65535" in str(refused.value) and "0" in str(refused.value)


@pytest.mark.parametrize("text", ["99999", "-1", "abc"])
def test_argparse_reports_a_bad_port_in_one_line_with_exit_code_2(text, capsys):
    """Through argparse: `error: argument --port: ...`, exit code 2, no traceback."""
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["--port", text])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"server.py: error: argument --port: {text!r} is not a TCP port" in err
    assert "Traceback" not in err


# -------------------------------------------------------------- open_log


def test_open_log_starts_a_fresh_line_buffered_log(tmp_path):
    """No previous log: a new empty file, and every line written is in the file at once."""
    path = tmp_path / "log.txt"
    with runner.open_log(path) as log:
        assert path.read_text() == ""
        log.write("SENSOR,1.000\n")
        assert path.read_text() == "SENSOR,1.000\n"     # line-buffered: no flush needed
    assert not Path(f"{path}.1").exists()


def test_open_log_keeps_the_previous_log_as_path_1(tmp_path):
    """A previous log that holds samples becomes PATH.1 (replacing an older PATH.1)."""
    path = tmp_path / "log.txt"
    path.write_text("SENSOR,1.000\n")
    Path(f"{path}.1").write_text("SENSOR,0.000\n")
    with runner.open_log(path):
        pass
    assert path.read_text() == ""
    assert Path(f"{path}.1").read_text() == "SENSOR,1.000\n"


def test_open_log_does_not_rotate_an_empty_log(tmp_path):
    """An empty previous log is not worth keeping: PATH.1 stays the older, useful one."""
    path = tmp_path / "log.txt"
    path.write_text("")
    Path(f"{path}.1").write_text("SENSOR,0.000\n")
    with runner.open_log(path):
        pass
    assert Path(f"{path}.1").read_text() == "SENSOR,0.000\n"


@pytest.mark.parametrize("where", ["missing folder", "a folder"])
def test_open_log_that_cannot_be_written_raises_log_error(where, tmp_path):
    """A missing folder or a folder as PATH: LogError (an OSError) naming the file and why; no file made."""
    path = tmp_path / "missing" / "log.txt" if where == "missing folder" else tmp_path
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(runner.LogError) as refused:
        runner.open_log(path)
    assert isinstance(refused.value, OSError)
    assert str(refused.value).startswith(f"cannot write the log {path}: ")
    assert sorted(tmp_path.rglob("*")) == before


def test_open_log_on_a_full_disk_renames_nothing(tmp_path, monkeypatch):
    """A full disk is seen before anything is renamed: the previous log stays where it was."""
    path = tmp_path / "log.txt"
    path.write_text("SENSOR,1.000\n")
    full = runner.shutil.disk_usage(tmp_path)._replace(free=0)
    monkeypatch.setattr(runner.shutil, "disk_usage", lambda where: full)
    with pytest.raises(runner.LogError) as refused:
        runner.open_log(path)
    assert str(refused.value) == f"cannot write the log {path}: No space left on device"
    assert isinstance(refused.value.__cause__, OSError) and refused.value.__cause__.errno == errno.ENOSPC
    assert path.read_text() == "SENSOR,1.000\n"
    assert not Path(f"{path}.1").exists()


def test_open_log_puts_the_previous_log_back_if_the_new_one_fails(tmp_path, monkeypatch):
    """If the new file cannot be created after the rename, the previous log returns to PATH."""
    path = tmp_path / "log.txt"
    path.write_text("SENSOR,1.000\n")

    def cannot_open(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(runner, "open", cannot_open, raising=False)   # found before the built-in open()
    with pytest.raises(runner.LogError, match="Permission denied"):
        runner.open_log(path)
    assert path.read_text() == "SENSOR,1.000\n"
    assert not Path(f"{path}.1").exists()


class FullDisk:
    """A file whose every write fails as on a full disk (ENOSPC); it was open(), so name and close() work."""

    def __init__(self, file) -> None:
        self.file, self.name = file, file.name

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        self.file.close()


def test_a_log_write_that_fails_stops_the_server_with_one_line_and_exit_2(tmp_path, capsys):
    """The disk fills up while the server runs: the sensor thread's write() raises nothing; the stage
    stops as on Ctrl+C (its cleanup runs), and run() says why in one line, exit code 2."""
    path = tmp_path / "log.txt"
    seen = {}

    async def stage() -> None:
        log = runner.open_log(path)
        log.write("SENSOR,1.000\n")
        log.file = FullDisk(log.file)
        try:
            writer = threading.Thread(target=lambda: seen.update(returned=log.write("SENSOR,2.000\n")))
            writer.start()                  # a thread of the stage's own, as test5's sensor
            await asyncio.wait_for(runner.stopped(), 10)
            writer.join()
            seen["later"] = log.write("SENSOR,3.000\n")     # dropped: the first error is the one kept
        finally:
            log.close()
            seen["lines"] = log.lines
    assert runner.run(stage()) == 2
    assert seen == {"returned": 0, "later": 0, "lines": 1}
    assert path.read_text() == "SENSOR,1.000\n"
    out, err = capsys.readouterr()
    assert out == "" and err == f"error: cannot write the log {path}: No space left on device\n"


def test_a_log_that_cannot_close_is_an_error_too(tmp_path):
    """close() raises nothing; a last line that could not be written is kept as the log's error."""
    class Unflushable(FullDisk):
        def close(self) -> None:
            self.file.close()
            raise OSError(errno.ENOSPC, "No space left on device")

    log = runner.open_log(tmp_path / "log.txt")
    log.file = Unflushable(log.file)
    log.close()
    assert str(log.error) == f"cannot write the log {tmp_path / 'log.txt'}: No space left on device"


def test_a_log_counts_its_lines(tmp_path):
    """lines: how many lines reached the file (the count a stage prints at exit)."""
    with runner.open_log(tmp_path / "log.txt") as log:
        for value in range(3):
            log.write(f"SENSOR,{value}.000\n")
    assert log.lines == 3 and log.error is None
    assert (tmp_path / "log.txt").read_text().count("\n") == 3


# ------------------------------------------------------------------ read_page


def test_read_page_returns_the_bytes(tmp_path):
    page = tmp_path / "client.html"
    page.write_bytes(b"<!doctype html>\n")
    assert runner.read_page(page) == b"<!doctype html>\n"


@pytest.mark.parametrize("where", ["missing", "a folder"])
def test_a_page_that_cannot_be_read_is_one_line_and_exit_2(where, tmp_path, capsys):
    """Missing or a folder: PageError naming the file and why; through run(): one line, exit code 2."""
    page = tmp_path / "client.html" if where == "missing" else tmp_path

    async def stage() -> None:
        runner.read_page(page)
    assert runner.run(stage()) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: cannot read the page {page}: ") and err.count("\n") == 1


# -------------------------------------------------------- options and parse


@pytest.fixture
def common_logger():
    """The "common" logger as it was, restored after the test (parse() and print_refusals() change it)."""
    logger = logging.getLogger("common")
    level, filters = logger.level, list(logger.filters)
    yield logger
    logger.setLevel(level)
    logger.filters[:] = filters


def test_options_every_stage_shares(common_logger):
    """--host (the stage's default), --port 5678, --speed 1, no --log unless asked, no TLS, no wire view."""
    args = runner.parse(runner.options("test0: a title.\n\nThe rest.", host="127.0.0.1"), [])
    assert (args.host, args.port, args.speed, args.verbose, args.ssl) == ("127.0.0.1", 5678, 1.0, False, None)
    assert not hasattr(args, "log")
    log = Path("/somewhere/log.txt")
    args = runner.parse(runner.options("test0", host="0.0.0.0", log=log), ["--port", "0", "--speed", "20"])
    assert (args.host, args.port, args.speed, args.log) == ("0.0.0.0", 0, 20.0, log)


def test_speed_scales_the_stage_clock(common_logger, monkeypatch):
    """--speed N: scaled(seconds) is seconds / N, for every stage (test1's delays, the sensors' periods)."""
    monkeypatch.setattr(runner, "_speed", 1.0)
    runner.parse(runner.options("test0", host="127.0.0.1"), [])
    assert runner.scaled(3.0) == 3.0
    runner.parse(runner.options("test0", host="127.0.0.1"), ["--speed", "4"])
    assert runner.scaled(3.0) == 0.75


def test_help_is_the_docstring(capsys):
    """The docstring's first paragraph is the description, the rest the epilog, line breaks kept."""
    with pytest.raises(SystemExit) as exited:
        runner.options("test0: a title.\n\nRun:   this\nOpen:  that", host="127.0.0.1").parse_args(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "test0: a title." in out and "Run:   this\nOpen:  that" in out and "--certfile PATH" in out


@pytest.mark.parametrize(("text", "expected"), [("1", 1.0), ("0.5", 0.5), ("20", 20.0)])
def test_positive_accepts_numbers_above_0(text, expected):
    """--speed: any number more than 0."""
    assert runner.positive(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "abc", "nan", "inf", ""])
def test_positive_refuses_anything_else(text):
    """0, negative, not a number, infinite: ArgumentTypeError, which argparse turns into exit code 2."""
    with pytest.raises(argparse.ArgumentTypeError, match="more than 0"):
        runner.positive(text)


def test_verbose_is_the_library_wire_view_only(common_logger):
    """-v: the logger "common" at DEBUG; asyncio's and the root logger's levels are left alone."""
    root, aio = logging.getLogger().level, logging.getLogger("asyncio").level
    runner.parse(runner.options("test0", host="127.0.0.1"), ["-v"])
    assert common_logger.level == logging.DEBUG
    assert (logging.getLogger().level, logging.getLogger("asyncio").level) == (root, aio)


def test_vv_adds_the_header_bytes_level(common_logger):
    """-vv: the logger "common" at HEADER_BYTES, below DEBUG: frame lines and their bytes."""
    runner.parse(runner.options("test0", host="127.0.0.1"), ["-vv"])
    assert common_logger.level == HEADER_BYTES < logging.DEBUG


def test_certfile_gives_a_server_ssl_context(common_logger):
    """--certfile and --keyfile: args.ssl is a server-side SSLContext with that certificate."""
    args = runner.parse(runner.options("test0", host="127.0.0.1"),
                        ["--certfile", str(FIXTURES / "localhost.pem"), "--keyfile", str(FIXTURES / "localhost.key")])
    assert isinstance(args.ssl, ssl.SSLContext) and args.ssl.protocol == ssl.PROTOCOL_TLS_SERVER


@pytest.mark.parametrize("problem", ["missing", "not a certificate", "keyfile alone"])
def test_bad_certificate_exits_2_with_one_line(problem, tmp_path, capsys, common_logger):
    """A certificate that cannot be loaded: exit 2 and one line, error: ...; --keyfile alone: argparse's error."""
    argv = {"missing": ["--certfile", str(tmp_path / "nowhere.pem")],
            "not a certificate": ["--certfile", str(FIXTURES / "README.md")],
            "keyfile alone": ["--keyfile", str(FIXTURES / "localhost.key")]}[problem]
    with pytest.raises(SystemExit) as exited:
        runner.parse(runner.options("test0", host="127.0.0.1"), argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    if problem == "keyfile alone":
        assert "error: --keyfile goes with --certfile" in err
    else:
        assert err.startswith(f"error: cannot load the certificate {argv[1]}") and len(err.splitlines()) == 1


# ----------------------------------------------------------------- announce


class FakeServer:
    """What announce() reads of a Server: the address of its first listening socket."""

    def __init__(self, host: str, port: int) -> None:
        self.sockets = [type("Socket", (), {"getsockname": lambda self: (host, port)})()]


@pytest.mark.parametrize(("port", "tls", "query"), [(5678, False, ""), (4321, False, "?port=4321"),
                                                    (5678, True, "?scheme=wss"), (4321, True, "?port=4321&scheme=wss")])
def test_announce_names_the_page_with_what_it_cannot_guess(port, tls, query, capsys):
    """A page from disk: file://...client.html, with ?port= when not 5678 and ?scheme=wss under TLS."""
    page = Path("/lab/test1/client.html")
    args = argparse.Namespace(ssl=object() if tls else None)
    runner.announce(FakeServer("127.0.0.1", port), args, page)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"listening on {'wss' if tls else 'ws'}://127.0.0.1:{port}/"
    assert out[1].startswith("only clients that can reach 127.0.0.1 can connect")
    assert out[-1] == f"open {page.as_uri()}{query} in a browser; Ctrl+C stops the server"


@pytest.mark.parametrize("tls", [False, True])
def test_announce_a_served_page_and_the_lan_addresses(tls, capsys, monkeypatch):
    """page None (test9): http(s)://localhost:PORT/; on 0.0.0.0, every LAN address as a URL to open."""
    monkeypatch.setattr(runner, "lan_addresses", lambda: ["192.168.1.20", "10.0.0.5"])
    runner.announce(FakeServer("0.0.0.0", 5678), argparse.Namespace(ssl=object() if tls else None), None)
    web = "https" if tls else "http"
    assert capsys.readouterr().out.splitlines() == [
        f"listening on {'wss' if tls else 'ws'}://0.0.0.0:5678/",
        f"on another device on this network, open {web}://192.168.1.20:5678/ or {web}://10.0.0.5:5678/",
        f"open {web}://localhost:5678/ in a browser; Ctrl+C stops the server",
    ]


def test_announce_on_every_interface_without_a_lan_address(capsys, monkeypatch):
    """No address found for the host name: say where to look it up."""
    monkeypatch.setattr(runner, "lan_addresses", lambda: [])
    runner.announce(FakeServer("0.0.0.0", 5678), argparse.Namespace(ssl=None), Path("/lab/client.html"))
    out = capsys.readouterr().out
    assert "no network address found" in out and "on this machine, connect to localhost" in out


def test_lan_addresses_are_ipv4_and_not_loopback():
    """Whatever this machine's name resolves to, minus 127.x; never raises."""
    for address in runner.lan_addresses():
        socket.inet_aton(address)
        assert not address.startswith("127.")


# ---------------------------------------------------------------------- run


def test_run_returns_0_once_stopped(capsys):
    """The stage sets stop_event() itself: stopped() returns, exit 0."""
    async def stage() -> None:
        asyncio.get_running_loop().call_soon(runner.stop_event().set)
        await runner.stopped()
    assert runner.run(stage()) == 0
    assert capsys.readouterr().out == "server stopped\n"


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_run_stops_on_sigterm_and_ctrl_c(sig, capsys):
    """SIGTERM or SIGINT while the stage waits in stopped(): it returns, the stage's cleanup runs, exit 0."""
    cleaned = []

    async def stage() -> None:
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), getattr(signal, sig))
        try:
            await asyncio.wait_for(runner.stopped(), 10)
        finally:
            cleaned.append(True)
    assert runner.run(stage()) == 0
    assert cleaned == [True]
    assert capsys.readouterr().out == "server stopped\n"


@pytest.mark.parametrize(("error", "code"), [
    (OSError(errno.EADDRINUSE, "address already in use"), 1),
    (runner.LogError("cannot write the log /nowhere/log.txt: No such file or directory"), 2),
])
def test_run_turns_errors_into_one_line_and_an_exit_code(error, code, capsys):
    """A busy port: error: ..., exit 1; a log that cannot be written: exit 2; no traceback either way."""
    async def stage() -> None:
        raise error
    assert runner.run(stage()) == code
    out, err = capsys.readouterr()
    assert out == "" and err == f"error: {error}\n"


# ---------------------------------------------------------------- printable


@pytest.mark.parametrize(("message", "shown"), [
    ("FLY", "FLY"), ("GET_TIME", "GET_TIME"), ("x" * 40, "x" * 40),
    ("x" * 41, repr("x" * 20) + "..."), ("", "''"), (" ", "' '"), ("STOP\n", "'STOP\\n'"), ("START\x00", "'START\\x00'"),
    (b"START", "<5 bytes of binary>"), (b"", "<0 bytes of binary>"),
])
def test_printable_keeps_what_a_client_sent_short_and_readable(message, shown):
    """Plain short text as it is; bytes as their count; anything else as a cut repr()."""
    assert runner.printable(message) == shown


def test_printable_is_short_for_huge_messages():
    """100 KB of text or 1 MB of bytes: a few dozen characters, one line."""
    for message in ("é" * 100_000, b"\x00" * 2**20):
        shown = runner.printable(message)
        assert len(shown) < 40 and "\n" not in shown


# ----------------------------------------------------------- print_refusals


def test_print_refusals_prints_what_serve_refused_by_itself(common_logger, capsys):
    """A refusal logged at INFO with its InvalidHandshake: one console line with the status and why."""
    common_logger.setLevel(logging.NOTSET)
    runner.print_refusals(verbose=False)
    assert common_logger.level == logging.INFO
    record = common_logger.makeRecord("common", logging.INFO, __file__, 1, "%s: handshake refused with %d: %s",
                                      ("127.0.0.1:1", 403, InvalidOrigin("origin 'null' is not allowed")), None)
    assert not common_logger.filter(record)                 # printed, not logged a second time
    assert capsys.readouterr().out == "HTTP request -> 403: origin 'null' is not allowed\n"
    other = common_logger.makeRecord("common", logging.INFO, __file__, 1, "a frame", (), None)
    assert not common_logger.filter(other)                  # the wire view only with -v
    assert capsys.readouterr().out == ""


def test_print_refusals_with_verbose_keeps_the_wire_view(common_logger, capsys):
    """-v: the lines still reach the log as well, at DEBUG."""
    common_logger.setLevel(logging.DEBUG)
    runner.print_refusals(verbose=True)
    assert common_logger.level == logging.DEBUG
    other = common_logger.makeRecord("common", logging.DEBUG, __file__, 1, "a frame", (), None)
    assert common_logger.filter(other)


def test_print_refusals_prints_what_process_request_answered(common_logger, capsys):
    """A stage's own answer (test4b's 404, test9's page): "HTTP PATH -> STATUS", the path escaped."""
    common_logger.setLevel(logging.NOTSET)
    runner.print_refusals(verbose=False)
    for path, shown in [("/nowhere/", "/nowhere/"), ("/\x1b]0;x\x07", "/\\x1b]0;x\\x07")]:
        record = common_logger.makeRecord("common", logging.INFO, __file__, 1, ANSWERED,
                                          ("127.0.0.1:1", "GET", path, 404), None)
        assert not common_logger.filter(record)
        assert capsys.readouterr().out == f"HTTP {shown} -> 404\n"


def test_parse_turns_refusal_lines_on_once(common_logger, capsys):
    """Every stage gets the refusal lines from parse(); parsing twice still prints each line once."""
    runner.parse(runner.options("test0", host="127.0.0.1"), [])
    runner.parse(runner.options("test0", host="127.0.0.1"), [])
    record = common_logger.makeRecord("common", logging.INFO, __file__, 1, "%s: handshake refused with %d: %s",
                                      ("127.0.0.1:1", 403, InvalidOrigin("origin 'null' is not allowed")), None)
    common_logger.filter(record)
    assert capsys.readouterr().out == "HTTP request -> 403: origin 'null' is not allowed\n"


@pytest.mark.parametrize(("error", "said"), [
    (ssl.SSLError(1, "[SSL: HTTP_REQUEST] http request"), "the client spoke plain HTTP/ws, use wss://"),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "the client closed the connection first"),
])
def test_tls_failure_says_what_went_wrong(error, said):
    if "HTTP_REQUEST" in str(error):
        error.reason = "HTTP_REQUEST"
    assert runner.tls_failure(error).startswith(said)

"""Smoke tests of the stage servers: each real testN/server.py, talked to with common.connect.

Every server runs as a subprocess (tests/stage_util.py) on a free port with a
faster clock (--speed), its log in tmp_path. No fixed sleeps: each wait is for
an event, bounded (asyncio.wait_for, Stage.wait_for_output). The only waits
that end by timing out are the checks that something does NOT happen (no
reading after STOP), bounded by a few sample periods.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

try:                                    # tests/ as a package or as a plain directory
    from .helpers import run
    from .stage_util import REPO, Stage, running_stage, stage_has_log
except ImportError:
    from helpers import run
    from stage_util import REPO, Stage, running_stage, stage_has_log

from common import ClientConnection, ConnectionClosed, InvalidStatus, connect
from common.explain import explain

TIMEOUT = 5.0                           # bound on every single wait for an event
ALL = ["test1", "test2", "test3", "test4", "test4b", "test5", "test6", "test7", "test8", "test9"]
ACQUISITION = ["test4", "test4b", "test5", "test6", "test7", "test8", "test9"]
BY_PATH = ["test4b", "test5", "test6", "test7", "test8", "test9"]   # /commands/ and /stream_data/
SHARED = ["test5", "test6", "test7", "test8", "test9"]              # one acquisition, logged, broadcast

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
VALUE = r"-?\d+\.\d{3}"
ONE_VALUE = re.compile(rf"SENSOR,{VALUE}")                          # test4 to test7
THREE_VALUES = re.compile(rf"SENSOR,(\d+),({VALUE}),({VALUE}),({VALUE})")  # test8, test9
LOGGED = re.compile(r"logged (\d+) samples")


def reading_format(stage: str) -> re.Pattern[str]:
    return THREE_VALUES if stage in ("test8", "test9") else ONE_VALUE


def sample_period(stage: str, speed: float) -> float:
    """Seconds between two readings a data client receives, at this speed."""
    return (0.1 if stage in ("test4", "test4b") else 0.25 * 4) / speed


async def recv(ws: ClientConnection) -> str:
    message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(message, str)
    return message


async def ask(ws: ClientConnection, command: str) -> str:
    """Send one command, return the reply."""
    await ws.send(command)
    return await recv(ws)


async def round_trip(ws: ClientConnection) -> None:
    """Ping and wait for the pong: everything the server sent before it has arrived."""
    await asyncio.wait_for(await ws.ping(), TIMEOUT)


def page_origin(name: str, stage: Stage) -> str:
    """The Origin a browser sends from the stage's page: file:// pages send "null"; test9 serves its own."""
    return f"http://127.0.0.1:{stage.port}" if name == "test9" else "null"


async def open_socket(name: str, stage: Stage, role: str, **options) -> ClientConnection:
    """Open the command ("COMMS") or data ("DATA") socket the way the stage's page does."""
    if name in ("test1", "test2", "test3"):
        return await connect(stage.url("/"), **options)
    if name == "test4":
        ws = await connect(stage.url("/"), **options)
        await ws.send(role)
        return ws
    return await connect(stage.url("/commands/" if role == "COMMS" else "/stream_data/"), **options)


async def assert_stream_stopped(ws: ClientConnection, window: float) -> list[str]:
    """After STOP: the readings already on their way arrive, then nothing for `window` s.

    Returns the late readings. A server that keeps sending would never leave
    the loop, hence the bound on their number.
    """
    await round_trip(ws)                # every reading sent before the STOP is here now
    late = []
    while True:
        try:
            late.append(await asyncio.wait_for(ws.recv(), window))
        except TimeoutError:
            return late
        assert len(late) <= 50, f"readings keep coming after STOP: {late[-3:]}"


# ---------------------------------------------------------------- every stage


@pytest.mark.parametrize("name", ALL)
def test_server_runs_from_inside_its_folder(name):
    """python3 server.py inside testN/ imports common (running_stage covers any other folder)."""
    result = subprocess.run([sys.executable, "server.py", "--help"], cwd=REPO / name,
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert "run the clock N times faster (used by the tests)" in result.stdout
    assert name in result.stdout        # the docstring is the help's description


@pytest.mark.parametrize("name", ALL)
def test_clients_leaving_and_ctrl_c_are_clean(name, tmp_path):
    """A client that vanishes is no error; -v logs frames; Ctrl+C closes clients with 1001, exit 0."""
    speed = 1 if name == "test1" else 20  # test1 sends unasked: slowly, so that unread messages stay few
    with running_stage(name, "-v", tmp_path=tmp_path, speed=speed) as stage:

        async def scenario() -> int:
            commands = await open_socket(name, stage, "COMMS", origin=page_origin(name, stage))  # as the page
            data = await open_socket(name, stage, "DATA")
            if name in ("test1", "test2", "test3"):
                await round_trip(data)
            else:                       # with the sensor running, and sending when the client vanishes
                assert await ask(commands, "START") == "OK: acquisition started"
                await recv(data)
            data.transport.abort()      # no close frame: the TCP connection just drops
            await asyncio.to_thread(stage.wait_for_output, "Bye, client")
            await round_trip(commands)
            await asyncio.to_thread(stage.wait_for_output, "PONG")      # -v: the wire view
            stopping = asyncio.create_task(asyncio.to_thread(stage.stop, signal.SIGINT))
            async for _ in commands:    # test1 keeps sending: read on, to see the close
                pass
            assert commands.close_code == 1001
            return await stopping

        assert run(scenario()) == 0
    output = stage.output()
    assert "Traceback" not in output
    assert output.count("Hello, client") == output.count("Bye, client") == 2
    if stage.log_path is not None:
        logged = int(LOGGED.search(output).group(1))
        assert logged == len(stage.log_path.read_text().splitlines()) > 0


def test_test2_vv_frames_read_back_with_explain(tmp_path):
    """The tour's "read the wire": test2 -vv logs GET_TIME's frame in hex, and explain reads it back."""
    with running_stage("test2", "-vv", tmp_path=tmp_path) as stage:

        async def scenario() -> None:
            async with connect(stage.url()) as ws:
                await ws.send("GET_TIME")
                await ws.recv()

        run(scenario())
        stage.wait_for_output("= connection is CLOSED: the client closed with 1000")
    lines = stage.output().splitlines()
    received = next(i for i, line in enumerate(lines) if "< TEXT 'GET_TIME'" in line)
    frame = lines[received + 1].split(" frame ", 1)[1]
    assert frame.startswith("81 88 ")           # FIN + text, MASK + 8 bytes: a client's frame
    assert "=> message: text 'GET_TIME' (8 bytes)" in explain(frame)
    assert any(line.endswith("< GET / HTTP/1.1") for line in lines)
    assert any(line.endswith("> HTTP/1.1 101 Switching Protocols") for line in lines)


def test_the_wire_view_escapes_what_the_peer_sent(tmp_path):
    """-vv quotes a close reason as it came: its control characters are shown
    as escapes, so that a peer cannot retitle or clear the terminal."""
    with running_stage("test2", "-vv", tmp_path=tmp_path) as stage:

        async def scenario() -> None:
            async with connect(stage.url()) as ws:
                await ws.close(4000, "\x1b]0;pwned\x07\x1b[2J")

        run(scenario())
        stage.wait_for_output("= connection is CLOSED: the client closed with 4000")
    output = stage.output()
    assert "\x1b" not in output and "\x07" not in output
    assert r"\x1b]0;pwned\x07\x1b[2J" in output


def test_test1_sees_a_client_leave_that_sent_more_than_max_queue_messages(tmp_path):
    """test1 never reads; a client that sent 20 messages then drops still gets "Bye, client" at once."""
    with running_stage("test1", "-v", tmp_path=tmp_path) as stage:

        async def scenario() -> None:
            ws = await connect(stage.url())
            for number in range(20):    # more than the server's max_queue (16): it stops reading
                await ws.send(f"unread {number}")
            # -v logs each frame as it is parsed; the pause follows at once, in the same step.
            await asyncio.to_thread(stage.wait_for_output, "unread 15")
            ws.transport.abort()

        run(scenario())
        stage.wait_for_output("Bye, client", timeout=3)
        assert "socket.send() raised exception" not in stage.output()


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
@pytest.mark.parametrize("name", ALL)
def test_bad_port_is_an_argparse_error_that_touches_no_file(name, port, tmp_path):
    """--port outside 0-65535: argparse's one-line error, exit 2, no traceback, the previous log untouched."""
    log = tmp_path / "log.txt"
    log.write_text("SENSOR,1.000\n")     # a previous run's log, for the stages that keep one
    result = subprocess.run(
        [sys.executable, str(REPO / name / "server.py"), "--port", port, "--host", "127.0.0.1"]
        + (["--log", str(log)] if stage_has_log(name) else []),
        cwd=tmp_path, capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert f"error: argument --port: {port!r} is not a TCP port" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["log.txt"]
    assert log.read_text() == "SENSOR,1.000\n"


@pytest.mark.parametrize("name", ALL)
def test_page_declares_an_inline_icon(name):
    """No browser asks a server for /favicon.ico: every page names the same empty data: icon."""
    page = (REPO / name / "client.html").read_text(encoding="utf-8")
    assert page.count('<link rel="icon" href="data:,">') == 1, name


# ---------------------------------------------------------------- test1 to test3


def test_test1_sends_each_client_its_own_stream_of_timestamps(tmp_path):
    """Timestamps are UTC ISO 8601 with microseconds and Z; two clients get different streams."""
    with running_stage("test1", tmp_path=tmp_path) as stage:

        async def scenario() -> tuple[list[str], list[str]]:
            async with connect(stage.url()) as a, connect(stage.url()) as b:
                return [await recv(a) for _ in range(5)], [await recv(b) for _ in range(5)]

        first, second = run(scenario())
        stage.wait_for_output("Bye, client")
        for stamps in (first, second):
            assert all(TIMESTAMP.fullmatch(stamp) for stamp in stamps), stamps
            times = [datetime.fromisoformat(stamp.replace("Z", "+00:00")) for stamp in stamps]
            assert times == sorted(times)
            assert all(time.utcoffset().total_seconds() == 0 for time in times)
        assert set(first).isdisjoint(second)    # not one stream shared: one per client
        output = stage.output()
        assert output.count("Hello, client") == 2
        assert all(f"> {stamp}" in output for stamp in first + second)  # each printed as sent: ">", as -v does
        assert "<-" not in output


@pytest.mark.parametrize("name", ["test2", "test3"])
def test_request_response_commands(name, tmp_path):
    """GET_TIME -> a timestamp, GREET_ME -> a greeting, anything else -> ERROR; each request logged."""
    with running_stage(name, tmp_path=tmp_path) as stage:

        async def scenario() -> list[str]:
            async with connect(stage.url()) as ws:
                return [await ask(ws, command) for command in ("GET_TIME", "GREET_ME", "FLY_ME")]

        time, greeting, error = run(scenario())
        assert TIMESTAMP.fullmatch(time)
        datetime.fromisoformat(time.replace("Z", "+00:00"))
        assert greeting == "Hello, client!"
        assert error == "ERROR: Command FLY_ME not found"
        stage.wait_for_output("Bye, client")
        assert all(command in stage.output() for command in ("GET_TIME", "GREET_ME", "FLY_ME"))
        if name == "test3":             # which address to type on another device: here, none
            assert "only clients that can reach 127.0.0.1 can connect" in stage.output()


# ---------------------------------------------------------------- test4 and test4b


@pytest.mark.parametrize("name", ["test4", "test4b"])
def test_start_and_stop_the_stream(name, tmp_path):
    """START starts the readings on the data socket, STOP stops them; unknown commands are errors."""
    speed = 10
    window = 5 * sample_period(name, speed)
    with running_stage(name, tmp_path=tmp_path, speed=speed) as stage:

        async def scenario() -> None:
            commands = await open_socket(name, stage, "COMMS")
            data = await open_socket(name, stage, "DATA")
            assert await ask(commands, "START") == "OK: acquisition started"
            readings = [await recv(data) for _ in range(5)]
            assert all(ONE_VALUE.fullmatch(reading) for reading in readings), readings
            assert await ask(commands, "STOP") == "OK: acquisition stopped"
            await assert_stream_stopped(data, window)
            fresh = await open_socket(name, stage, "DATA")   # no backlog: nothing at all may come
            await round_trip(fresh)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(fresh.recv(), window)
            assert await ask(commands, "FLY") == "ERROR: Command FLY not found"
            assert await ask(commands, "START") == "OK: acquisition started"
            assert ONE_VALUE.fullmatch(await recv(fresh))     # it was listening all along
            for ws in (commands, data, fresh):
                await ws.close()

        run(scenario())
        stage.wait_for_output("asked FLY; answer: 'ERROR: Command FLY not found'")   # runner.printable(): as sent


def test_test4_refuses_an_unknown_role_with_1008(tmp_path):
    """A first message other than COMMS or DATA: an ERROR reply, then close code 1008."""
    with running_stage("test4", tmp_path=tmp_path) as stage:

        async def scenario() -> None:
            async with connect(stage.url("/")) as ws:
                await ws.send("HELLO")
                assert (await recv(ws)).startswith("ERROR: ")
                with pytest.raises(ConnectionClosed) as closed:
                    await recv(ws)
                assert closed.value.code == ws.close_code == 1008

        run(scenario())
        stage.wait_for_output("sent HELLO, which is no role")   # the console does not call it a socket's role
        assert "is a HELLO socket" not in stage.output()


@pytest.mark.parametrize("name", BY_PATH)
def test_unknown_path_is_refused_with_404(name, tmp_path):
    """From test4b on, a WebSocket path other than /commands/ and /stream_data/ gets HTTP 404."""
    paths = ["/commands", "/data/", "/stream_data/x", "/commands/?x=1"] + (["/"] if name != "test9" else [])
    with running_stage(name, tmp_path=tmp_path) as stage:

        async def scenario() -> None:
            for path in paths:
                with pytest.raises(InvalidStatus) as refused:
                    await connect(stage.url(path))
                assert refused.value.status_code == 404, path

        run(scenario())
        # Each refusal has its console line, printed before the answer was sent.
        lines = stage.wait_for_lines("HTTP ", len(paths), TIMEOUT)
        assert [line.partition(" -> ")[2] for line in lines] == ["404"] * len(paths), lines
        assert f"HTTP {paths[1]} -> 404" in lines, lines


@pytest.mark.parametrize("name", ALL)
def test_every_stage_prints_a_refused_handshake(name, tmp_path):
    """A handshake serve() refuses by itself (an Origin not allowed) leaves a console line in every stage."""
    with running_stage(name, tmp_path=tmp_path) as stage:
        path = "/" if name in ("test1", "test2", "test3", "test4") else "/commands/"

        async def scenario() -> None:
            with pytest.raises(InvalidStatus) as refused:
                await connect(stage.url(path), origin="https://elsewhere.example")
            assert refused.value.status_code == 403

        run(scenario())
        stage.wait_for_output("HTTP request -> 403: origin 'https://elsewhere.example' is not allowed", TIMEOUT)


# ---------------------------------------------------------------- test5 to test9


@pytest.mark.parametrize("name", SHARED)
def test_one_acquisition_broadcast_to_every_client_and_logged(name, tmp_path):
    """Two data clients get the same readings at once; STOP stops them; the log holds every sample.

    The previous run's log is kept as log.txt.1.
    """
    speed = 40
    started_ms = datetime.now().timestamp() * 1000
    (tmp_path / "log.txt").write_text("SENSOR,1.000\n")     # as if left by a previous run
    with running_stage(name, tmp_path=tmp_path, speed=speed) as stage:

        async def scenario() -> list[str]:
            commands = await open_socket(name, stage, "COMMS")
            first = await open_socket(name, stage, "DATA")
            second = await open_socket(name, stage, "DATA", origin=page_origin(name, stage))
            for ws in (first, second):
                await round_trip(ws)    # both are open, so both are in the audience
            assert await ask(commands, "START") == "OK: acquisition started"
            received = [[await recv(ws) for _ in range(4)] for ws in (first, second)]
            assert await ask(commands, "STOP") == "OK: acquisition stopped"
            for ws, readings in zip((first, second), received):
                readings += await assert_stream_stopped(ws, 5 * sample_period(name, speed))
            assert received[0] == received[1]   # one acquisition, one broadcast
            for ws in (commands, first, second):
                await ws.close()
            return received[0]

        received = run(scenario())
        assert stage.stop(signal.SIGTERM) == 0
    stopped_ms = datetime.now().timestamp() * 1000
    output = stage.output()
    assert "Traceback" not in output
    assert (tmp_path / "log.txt.1").read_text() == "SENSOR,1.000\n"
    lines = stage.log_path.read_text().splitlines()
    assert int(LOGGED.search(output).group(1)) == len(lines)
    assert all(reading_format(name).fullmatch(line) for line in lines + received)
    # Clients get every 4th sample, the log all of them, in the same order.
    assert received in [lines[phase::4] for phase in range(4)], (received, lines)
    if name in ("test8", "test9"):
        stamps = [int(THREE_VALUES.fullmatch(line).group(1)) for line in lines]
        assert stamps == sorted(stamps)
        assert started_ms - 1000 <= stamps[0] and stamps[-1] <= stopped_ms + 1000


@pytest.mark.parametrize(("name", "where"), [(name, "missing folder") for name in SHARED] + [("test5", "a folder")])
def test_unwritable_log_is_a_one_line_error(name, where, tmp_path):
    """--log in a missing folder, or naming a folder: exit code 2 and one line, no traceback."""
    log = tmp_path / "missing" / "log.txt" if where == "missing folder" else tmp_path
    result = subprocess.run(
        [sys.executable, str(REPO / name / "server.py"), "--port", "0", "--host", "127.0.0.1", "--log", str(log)],
        cwd=tmp_path, capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 2
    assert result.stdout == ""          # it never started listening
    assert len(result.stderr.splitlines()) == 1 and str(log) in result.stderr, result.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_stops_test5_with_one_line_and_exit_2(tmp_path):
    """--log /dev/full (every write: ENOSPC): START, the first sample fails, the server closes its
    clients with 1001 and exits 2 with one line (runner.Log, tested in tests/test_runner.py)."""
    with running_stage("test5", "--log", "/dev/full", tmp_path=tmp_path, speed=50) as stage:

        async def scenario() -> None:
            async with connect(stage.url("/commands/")) as commands:
                assert await ask(commands, "START") == "OK: acquisition started"
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(commands.recv(), TIMEOUT)
                assert commands.close_code == 1001

        run(scenario())
        assert stage.wait_exit() == 2
    output = stage.output()
    assert "Traceback" not in output and "Exception in thread" not in output, output
    assert [line for line in output.splitlines() if line.startswith("error:")] == [
        "error: cannot write the log /dev/full: No space left on device"], output
    assert "logged 0 samples to /dev/full" in output and "server stopped" not in output


@pytest.mark.parametrize("name", SHARED)
def test_a_second_server_on_a_busy_port_leaves_the_running_log_alone(name, tmp_path):
    """A start that fails (address already in use) renames no log and claims no samples; the running
    server goes on logging into its log, and the count it prints at exit is that file's."""
    speed = 40
    with running_stage(name, tmp_path=tmp_path, speed=speed) as stage:
        log = stage.log_path
        assert log is not None

        async def scenario() -> tuple[subprocess.CompletedProcess, str]:
            async with connect(stage.url("/commands/")) as commands, connect(stage.url("/stream_data/")) as data:
                await round_trip(data)
                assert await ask(commands, "START") == "OK: acquisition started"
                await recv(data)                # acquiring, and logging
                second = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, str(REPO / name / "server.py"), "--port", str(stage.port), "--host", "127.0.0.1",
                     "--speed", str(speed), "--log", str(log)],
                    cwd=tmp_path, capture_output=True, text=True, timeout=20,
                )
                return second, await recv(data)    # sampled after the failed start: logged, but where?

        second, reading = run(scenario())
        assert second.returncode == 1, second
        assert "address already in use" in second.stderr and "Traceback" not in second.stderr
        assert second.stdout == ""          # neither "listening" nor "logged 0 samples"
        assert not Path(f"{log}.1").exists()
        assert reading in log.read_text().splitlines()     # the running server still logs into log.txt
        assert stage.stop(signal.SIGTERM) == 0
    logged = LOGGED.findall(stage.output())
    assert len(logged) == 1 and f"samples to {log}" in stage.output()
    assert int(logged[0]) == len(log.read_text().splitlines()) > 0


def test_test8_readings_carry_a_timestamp_and_three_values(tmp_path):
    """test8: SENSOR,<ms>,<a>,<b>,<c> with <ms> the sampling time in Unix-epoch milliseconds."""
    with running_stage("test8", tmp_path=tmp_path, speed=40) as stage:

        async def scenario() -> list[str]:
            async with connect(stage.url("/commands/")) as commands, connect(stage.url("/stream_data/")) as data:
                await round_trip(data)
                assert await ask(commands, "START") == "OK: acquisition started"
                return [await recv(data) for _ in range(3)]

        readings = run(scenario())
    now_ms = datetime.now().timestamp() * 1000
    for reading in readings:
        match = THREE_VALUES.fullmatch(reading)
        assert match, reading
        assert now_ms - 60_000 < int(match.group(1)) <= now_ms
        assert 9 < float(match.group(4)) < 10.6  # the z axis holds gravity


def test_test8_and_test9_name_the_axes_as_the_page_and_the_wire_do():
    """The readings' three values are A, B and C, in the docstrings as in the pages' legend."""
    for name in ("test8", "test9"):
        source = (REPO / name / "server.py").read_text(encoding="utf-8")
        assert "A and B wobble slowly, C holds gravity" in source, name
        assert not re.search(r"\b[xyz] (and [xyz] )?(wobble|holds)", source), name


def test_test9_serves_the_dashboard_over_http(tmp_path):
    """test9: the page on /, /dashboard and /dashboard/ (no-store, nosniff); 404 and no file elsewhere."""
    page = (REPO / "test9" / "client.html").read_bytes()
    with running_stage("test9", tmp_path=tmp_path) as stage:
        stage.wait_for_output(f"open http://localhost:{stage.port}/ in a browser")

        def get(path: str, method: str = "GET") -> tuple[http.client.HTTPResponse, bytes]:
            connection = http.client.HTTPConnection("127.0.0.1", stage.port, timeout=TIMEOUT)
            try:
                connection.request(method, path)
                response = connection.getresponse()
                return response, response.read()
            finally:
                connection.close()

        for path in ("/", "/dashboard", "/dashboard/", "/?host=localhost&port=5678"):
            response, body = get(path)
            assert (response.status, body) == (200, page), path
            assert response.getheader("Content-Type") == "text/html; charset=utf-8"
            assert response.getheader("Cache-Control") == "no-store"
            assert response.getheader("X-Content-Type-Options") == "nosniff"
        response, body = get("/", "HEAD")
        assert (response.status, body) == (200, b"")
        assert response.getheader("Content-Length") == str(len(page))
        for path in ("/client.html", "/server.py", "/test9/client.html", "/../test9/client.html",
                     "/%2e%2e/server.py", "/dashboard/client.html", "/favicon.ico", "/log.txt"):
            response, body = get(path)
            assert response.status == 404, path
            assert response.getheader("Content-Type").startswith("text/plain")
            assert b"<html" not in body.lower() and b"import" not in body and len(body) < 200


def http_request(port: int, method: str, path: str, headers: dict[str, str]) -> int:
    """Send one request with exactly these headers (Host included); return the status of the answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(b"" if method == "POST" else None)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_test9_console_logs_every_http_request_with_its_status(tmp_path):
    """One console line per request, 405 and 426 included; a refused Host is shown as the name it asked for."""
    with running_stage("test9", tmp_path=tmp_path) as stage:
        host = f"127.0.0.1:{stage.port}"
        upgrade = {"Host": host, "Upgrade": "websocket", "Connection": "Upgrade",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
        cases = [  # method, path, headers, status, what the console says
            ("GET", "/", {"Host": host}, 200, "HTTP / -> 200"),
            ("GET", "/nowhere", {"Host": host}, 404, "HTTP /nowhere -> 404"),
            ("GET", "/", {"Host": "evil.example:47901"}, 403, "HTTP request -> 403: host 'evil.example' is not a name"),
            ("GET", "/", {}, 400, "HTTP request -> 400"),                  # serve(hosts=...): no Host is malformed
            ("POST", "/", {"Host": host, "Content-Length": "0"}, 405, "-> 405"),
            ("GET", "/commands/", {"Host": host}, 426, "-> 426"),          # a browser sent to a socket's URL
            ("GET", "/commands/", dict(upgrade, Origin="null"), 403, "-> 403"),   # refused by the Origin check
        ]
        for number, (method, path, headers, status, said) in enumerate(cases, 1):
            assert http_request(stage.port, method, path, headers) == status, (method, path, headers)
            lines = stage.wait_for_lines("HTTP ", number, TIMEOUT)       # printed before the answer was sent
            assert len(lines) == number and said in lines[-1], (method, path, headers, lines)
        assert "['" not in stage.output()                                 # no Python list printed

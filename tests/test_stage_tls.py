"""The stage servers over TLS: --certfile/--keyfile, wss:// and (test9) https://.

Each real testN/server.py (every stage: the options come from common/runner.py) runs as a subprocess
(tests/stage_util.py) with the self-signed *test fixture* in tests/fixtures/
(see tests/fixtures/README.md), and is talked to with common.connect and
http.client, both verifying the certificate against that fixture, host name
included. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

try:                                    # tests/ as a package or as a plain directory
    from .helpers import run
    from .stage_util import REPO, Stage, running_stage, stage_has_log
except ImportError:
    from helpers import run
    from stage_util import REPO, Stage, running_stage, stage_has_log

from common import ClientConnection, InvalidHandshake, connect

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CERT = FIXTURES / "localhost.pem"
KEY = FIXTURES / "localhost.key"
TIMEOUT = 5.0                           # bound on every single wait for an event
TLS_STAGES = ["test1", "test2", "test3", "test4", "test4b", "test5", "test6", "test7", "test8", "test9"]
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
READING = re.compile(r"SENSOR,\d+,-?\d+\.\d{3},-?\d+\.\d{3},-?\d+\.\d{3}")   # test8, test9


def client_context() -> ssl.SSLContext:
    """Trusts the fixture certificate only, and checks the host name against it."""
    return ssl.create_default_context(cafile=str(CERT))


def tls_options(tmp_path: Path, *, combined: bool = False) -> list[str]:
    """--certfile/--keyfile for the fixture; `combined`: one file holding both, no --keyfile."""
    if not combined:
        return ["--certfile", str(CERT), "--keyfile", str(KEY)]
    both = tmp_path / "localhost-with-key.pem"
    both.write_text(CERT.read_text() + KEY.read_text())
    return ["--certfile", str(both)]


async def recv(ws: ClientConnection) -> str:
    message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(message, str)
    return message


async def ask(ws: ClientConnection, command: str) -> str:
    await ws.send(command)
    return await recv(ws)


def assert_tls(ws: ClientConnection) -> None:
    tls = ws.transport.get_extra_info("ssl_object")
    assert tls is not None and tls.version() in ("TLSv1.2", "TLSv1.3")


def https_get(stage: Stage, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPSConnection("127.0.0.1", stage.port, timeout=TIMEOUT, context=client_context())
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def test_test3_answers_get_time_over_wss(tmp_path):
    """test3 --certfile --keyfile: listening on wss://, the page told ?scheme=wss, GET_TIME answered over TLS."""
    with running_stage("test3", *tls_options(tmp_path), tmp_path=tmp_path) as stage:
        assert stage.scheme == "wss" and stage.url("/").startswith("wss://127.0.0.1:")
        stage.wait_for_output("in a browser")
        assert f"client.html?port={stage.port}&scheme=wss " in stage.output()

        async def scenario() -> None:
            async with connect(stage.url("/"), ssl=client_context(), origin="null") as ws:   # as the page from disk
                assert_tls(ws)
                assert TIMESTAMP.fullmatch(await ask(ws, "GET_TIME"))
                assert await ask(ws, "GREET_ME") == "Hello, client!"

        run(scenario())
        assert stage.stop() == 0
    assert "Traceback" not in stage.output()


def test_test9_streams_readings_over_wss(tmp_path):
    """test9 with the key in the certificate's file: START, readings on /stream_data/, STOP, all over TLS."""
    with running_stage("test9", *tls_options(tmp_path, combined=True), tmp_path=tmp_path) as stage:
        assert stage.scheme == "wss"

        async def scenario() -> list[str]:
            context = client_context()
            async with connect(stage.url("/commands/"), ssl=context) as commands, \
                    connect(stage.url("/stream_data/"), ssl=context) as data:
                for ws in (commands, data):
                    assert_tls(ws)
                    assert ws.extension is not None     # permessage-deflate, inside TLS
                await asyncio.wait_for(await data.ping(), TIMEOUT)   # the data socket is registered
                assert await ask(commands, "START") == "OK: acquisition started"
                readings = [await recv(data) for _ in range(3)]
                assert await ask(commands, "STOP") == "OK: acquisition stopped"
                return readings

        readings = run(scenario())
        for reading in readings:
            assert READING.fullmatch(reading), reading
        assert stage.stop() == 0
    logged = stage.log_path.read_text(encoding="utf-8").splitlines()
    assert [r for r in readings if r not in logged] == []   # what was sent over TLS was logged


def test_test9_serves_its_page_over_https(tmp_path):
    """test9 with TLS: the page on / and /dashboard over https://, the https:// address printed."""
    page = (REPO / "test9" / "client.html").read_bytes()
    with running_stage("test9", *tls_options(tmp_path), tmp_path=tmp_path) as stage:
        assert stage.http_url("/") == f"https://127.0.0.1:{stage.port}/"
        stage.wait_for_output(f"open https://localhost:{stage.port}/ in a browser")
        for path in ("/", "/dashboard"):
            response, body = https_get(stage, path)
            assert (response.status, body) == (200, page), path
            assert response.getheader("Cache-Control") == "no-store"
        response, body = https_get(stage, "/server.py")
        assert response.status == 404 and b"import" not in body
        # The page, served over https:, must open its sockets with wss: (browsers refuse ws: there).
        assert b'location.protocol === "https:"' in page and b'"wss:"' in page


@pytest.mark.parametrize("name", TLS_STAGES)
def test_every_stage_speaks_wss(name, tmp_path):
    """Every stage, test1 on: with --certfile/--keyfile its socket speaks over TLS; a ws:// client fails."""
    with running_stage(name, *tls_options(tmp_path), tmp_path=tmp_path) as stage:
        assert stage.scheme == "wss"

        async def scenario() -> None:
            path = "/" if name in ("test1", "test2", "test3", "test4") else "/commands/"
            async with connect(stage.url(path), ssl=client_context()) as ws:
                assert_tls(ws)
                if name == "test1":             # the server talks first
                    assert TIMESTAMP.fullmatch(await recv(ws))
                elif name in ("test2", "test3"):
                    assert TIMESTAMP.fullmatch(await ask(ws, "GET_TIME"))
                else:
                    if name == "test4":
                        await ws.send("COMMS")      # test4: the role is the first message
                    assert await ask(ws, "STOP") == "OK: acquisition stopped"
            with pytest.raises((InvalidHandshake, ConnectionError)):   # plain ws:// to a TLS port: no handshake
                await connect(f"ws://127.0.0.1:{stage.port}{path}", open_timeout=TIMEOUT)

        run(scenario())
        # The client saw only a dropped connection (a page: 1006); the console says why.
        stage.wait_for_output("TLS handshake failed: the client spoke plain HTTP/ws, use wss://", TIMEOUT)
        assert stage.stop() == 0
    assert "Traceback" not in stage.output()


@pytest.mark.parametrize("name", TLS_STAGES)
@pytest.mark.parametrize("problem", ["missing certificate", "not a certificate", "missing key"])
def test_bad_certificate_is_a_one_line_error(name, problem, tmp_path):
    """A --certfile/--keyfile that cannot be loaded: exit code 2, one line naming it, no traceback, no log touched."""
    options = {
        "missing certificate": ["--certfile", str(tmp_path / "nowhere.pem")],
        "not a certificate": ["--certfile", str(FIXTURES / "README.md")],
        "missing key": ["--certfile", str(CERT), "--keyfile", str(tmp_path / "nowhere.key")],
    }[problem]
    log = tmp_path / "log.txt"
    result = subprocess.run(
        [sys.executable, str(REPO / name / "server.py"), "--port", "0", "--host", "127.0.0.1", *options]
        + (["--log", str(log)] if stage_has_log(name) else []),
        cwd=tmp_path, capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""          # it never started listening
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ") and options[1] in result.stderr
    assert not log.exists()             # checked before the log is opened (and the old one rotated)

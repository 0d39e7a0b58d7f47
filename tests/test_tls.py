"""wss://: serve(ssl=...) and connect("wss://...", ssl=...) over asyncio's TLS, on loopback.

The certificate and key in tests/fixtures/ are a self-signed *test fixture*
for 127.0.0.1 and localhost, published on purpose; they protect nothing
(see tests/fixtures/README.md).
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from pathlib import Path

import pytest

from common import ConnectionClosedError, ConnectionClosedOK, InvalidHandshake, connect

try:                                    # tests/ as a package or as a plain directory
    from .helpers import BOUND, run, serving
except ImportError:
    from helpers import BOUND, run, serving

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CERT = FIXTURES / "localhost.pem"
KEY = FIXTURES / "localhost.key"
MiB = 1 << 20


def server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT, KEY)
    return context


def client_context() -> ssl.SSLContext:
    """Verifies the server against the fixture certificate, hostname included."""
    return ssl.create_default_context(cafile=str(CERT))


async def echo_or_close(ws):
    """Echo; a text message "close CODE" makes the server close with that code."""
    async for message in ws:
        if isinstance(message, str) and message.startswith("close "):
            await ws.close(int(message.split()[1]), "server says bye")
            return
        await ws.send(message)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_wss_full_exchange(host):
    """Text, 1 MiB binary, compressed text and both close directions over TLS, certificate verified."""
    closed = []

    async def handler(ws):
        try:
            await echo_or_close(ws)
        except ConnectionClosedError as exc:
            closed.append(exc.code)
            raise

    async def main():
        async with serving(handler, ssl=server_context()) as server:
            url = f"wss://{host}:{server.port}/secure"
            async with connect(url, ssl=client_context()) as ws:
                tls = ws.transport.get_extra_info("ssl_object")
                assert tls is not None and tls.version() in ("TLSv1.2", "TLSv1.3")
                assert ws.extension is not None  # permessage-deflate inside TLS too
                await ws.send("héllo, wss")
                assert await ws.recv() == "héllo, wss"
                blob = os.urandom(MiB)
                await ws.send(blob)
                assert await ws.recv() == blob
                text = "compressible " * 10000
                await ws.send(text)
                assert await ws.recv() == text
                await ws.close(4000, "client says bye")
            assert ws.close_code == 4000  # echoed by the server
            async with connect(url, ssl=client_context()) as ws:
                await ws.send("close 4001")
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
                assert info.value.code == 4001 and info.value.reason == "server says bye"
            async with connect(url, ssl=client_context()) as ws:
                await ws.send("close 1000")
                with pytest.raises(ConnectionClosedOK):
                    await ws.recv()
        assert closed == [4000]

    run(main())


def test_plain_client_against_tls_port_fails_cleanly(caplog):
    """ws:// to a wss:// port: a handshake error on the client within a second, no error logged by the server."""
    caplog.set_level(logging.INFO, logger="common")

    async def main():
        async with serving(echo_or_close, ssl=server_context()) as server:
            started = time.monotonic()
            with pytest.raises((InvalidHandshake, ConnectionError)):
                await connect(f"ws://127.0.0.1:{server.port}/", open_timeout=BOUND)
            assert time.monotonic() - started < BOUND / 2
            async with connect(f"wss://127.0.0.1:{server.port}/", ssl=client_context()) as ws:
                await ws.send("still serving")
                assert await ws.recv() == "still serving"

    run(main())
    errors = [r for r in caplog.records if r.name == "common" and r.levelno >= logging.ERROR]
    assert errors == []


def test_tls_client_against_plain_port_fails_cleanly():
    """wss:// to a plain ws:// port: an SSL error, promptly."""

    async def main():
        async with serving(echo_or_close) as server:
            started = time.monotonic()
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await connect(f"wss://127.0.0.1:{server.port}/", ssl=client_context(), open_timeout=BOUND)
            assert time.monotonic() - started < BOUND / 2

    run(main())


def test_untrusted_certificate_is_refused():
    """The default context (ssl=None with wss://) does not trust a self-signed certificate."""

    async def main():
        async with serving(echo_or_close, ssl=server_context()) as server:
            with pytest.raises(ssl.SSLCertVerificationError):
                await connect(f"wss://127.0.0.1:{server.port}/", open_timeout=BOUND)

    run(main())


def test_ssl_with_ws_uri_is_an_error():
    """ssl= with a ws:// URI is a mistake, reported before connecting."""

    async def main():
        with pytest.raises(ValueError, match="wss://"):
            await connect("ws://127.0.0.1:9/", ssl=client_context())

    run(main())

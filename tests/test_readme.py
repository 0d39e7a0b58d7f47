"""README.md as a new user reads it: short enough to read, its commands
the ones CI runs, and its library example working as it says."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from common import ConnectionClosedOK, connect

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def test_readme_is_under_12_kb() -> None:
    assert len(README.encode()) < 12 * 1024


def test_ci_runs_readmes_test_line() -> None:
    """The second block is the test line, and .ci/run ends with exactly it."""
    test_line = code_blocks("sh")[1].strip()
    assert test_line == "python3 tests/run.py"
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == test_line


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_library_example_echoes_and_ends_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """Saved beside common/ (here: with the lab on the path) and run, the
    example echoes; Ctrl+C closes its client with 1001 and prints nothing."""
    [example] = code_blocks("python")
    port = free_port()
    script = tmp_path / "echo.py"
    script.write_text(example.replace("5678", str(port)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        async def scenario() -> int | None:
            async with asyncio.timeout(10):
                while True:
                    try:
                        ws = await connect(f"ws://127.0.0.1:{port}/")
                        break
                    except OSError:             # not listening yet
                        await asyncio.sleep(0.05)
                await ws.send("hello")
                assert await ws.recv() == "hello"
                server.send_signal(signal.SIGINT)
                try:
                    await ws.recv()
                except ConnectionClosedOK:
                    pass
                return ws.close_code

        assert asyncio.run(scenario()) == 1001
        out, err = server.communicate(timeout=10)
    finally:
        server.kill()
        server.wait()
    assert server.returncode == 0 and err == "" and out == ""

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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # make "common" importable

try:                                    # tests/ as a package or as a plain directory
    from .stage_util import REPO, running_stage
except ImportError:
    from stage_util import REPO, running_stage

from common import ConnectionClosed, connect  # noqa: E402

TIMEOUT = 10.0                          # bound on every single wait for an event
SHARED = ["test5", "test6", "test7", "test8", "test9"]
VALUE = r"-?\d+\.\d{3}"
LINE = {name: re.compile(rf"SENSOR,{VALUE}") for name in ("test5", "test6", "test7")}
LINE |= {name: re.compile(rf"SENSOR,(\d+),{VALUE},{VALUE},{VALUE}") for name in ("test8", "test9")}
LOGGED = re.compile(r"logged (\d+) samples")
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def run(coro, bound: float = 60):
    return asyncio.run(asyncio.wait_for(coro, bound))


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

        received = run(scenario())
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

        run(scenario())
        stage.proc.wait(TIMEOUT)
        code = stage.stop()
    output = stage.output()
    assert code not in (0, None), output
    assert "Traceback" not in output and "Exception in thread" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "/dev/full" in errors[0] and "No space left on device" in errors[0], output
    assert LOGGED.search(output).group(1) == "0"

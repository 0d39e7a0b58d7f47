"""Run a stage's server.py as a subprocess, for tests: `with running_stage("test2", tmp_path=tmp_path) as stage:`.

The server is started on a free port (--port 0) with a faster clock (--speed),
and the helper waits for its `listening on ws://HOST:PORT/` line (`wss://` when
given --certfile; `Stage.scheme` then says "wss", and `Stage.url()` follows).
Everything it prints (stdout and stderr together) is collected by a background
thread, so tests can wait for a line with a bound instead of sleeping. The
server is always stopped on the way out: SIGTERM, then SIGKILL if it does not exit.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["REPO", "Stage", "running_stage", "stage_has_log"]

REPO = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (wss?)://(\S+):(\d+)/")
START_TIMEOUT = 10.0


def stage_has_log(stage: str) -> bool:
    """test5 and later log every sample to a file (--log)."""
    match = re.fullmatch(r"test(\d+)b?", stage)
    return match is not None and int(match.group(1)) >= 5


class Stage:
    """A running server.py: its port, its process and everything it printed."""

    def __init__(self, proc: subprocess.Popen, log_path: Path | None) -> None:
        self.proc = proc
        self.log_path = log_path
        self.port = 0
        self.scheme = "ws"              # "wss" when the server listens with TLS (--certfile)
        self._text: list[str] = []
        self._eof = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._drain, name="stage-output", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        """Background thread: collect the output as it comes (partial lines too)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            text = decoder.decode(chunk)
            with self._changed:
                self._text.append(text)
                self._changed.notify_all()
        with self._changed:
            self._text.append(decoder.decode(b"", final=True))
            self._eof = True
            self._changed.notify_all()

    def url(self, path: str = "/") -> str:
        """The WebSocket URL of `path` on this server: ws://127.0.0.1:PORT/... (wss:// with TLS)."""
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def http_url(self, path: str = "/") -> str:
        """The same address for plain HTTP (test9's page): http://... (https:// with TLS)."""
        return f"{'https' if self.scheme == 'wss' else 'http'}://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        """Everything the server printed so far, stdout and stderr interleaved."""
        with self._changed:
            return "".join(self._text)

    def _wait(self, found, timeout: float) -> bool:
        """Wait until found(output) is true or the output ended; bounded by timeout."""
        with self._changed:
            self._changed.wait_for(lambda: found("".join(self._text)) or self._eof, timeout)
            return bool(found("".join(self._text)))

    def wait_for_output(self, text: str, timeout: float = 10) -> None:
        """Wait (at most `timeout` seconds) until `text` appears in the output."""
        if not self._wait(lambda output: text in output, timeout):
            raise AssertionError(f"{text!r} not printed within {timeout} s; output so far:\n{self.output()}")

    def wait_for_lines(self, prefix: str, count: int, timeout: float = 10) -> list[str]:
        """Wait (at most `timeout` seconds) until `count` lines start with `prefix`; return all such lines."""
        def lines(output: str) -> list[str]:
            return [line for line in output.splitlines() if line.startswith(prefix)]
        if not self._wait(lambda output: len(lines(output)) >= count, timeout):
            raise AssertionError(f"not {count} lines starting with {prefix!r} within {timeout} s; output so far:\n{self.output()}")
        return lines(self.output())

    def _wait_listening(self, timeout: float) -> None:
        if not self._wait(LISTENING.search, timeout):
            if self._eof:               # its output ended: it is exiting, let it finish (bounded)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)
            code = self.proc.poll()
            raise AssertionError(
                f"no 'listening on ws://...' line within {timeout} s "
                f"({'still running' if code is None else f'exit code {code}'}); output:\n{self.output()}"
            )
        match = LISTENING.search(self.output())
        assert match is not None
        self.scheme, self.port = match.group(1), int(match.group(3))

    def wait_exit(self, timeout: float = 10) -> int:
        """Wait for the server to exit by itself (no signal, which could land in
        the middle of its own shutdown); return the exit code."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server did not exit by itself within {timeout} s; output:\n{self.output()}") from None
        self._reader.join(5)  # the output is complete once the pipe is closed
        return self.proc.returncode

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Send `sig`, wait for the exit (killing after `timeout`), return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._reader.join(5)
                raise AssertionError(f"server did not exit within {timeout} s of {signal.Signals(sig).name}; "
                                     f"output:\n{self.output()}") from None
        self._reader.join(5)  # the output is complete once the pipe is closed
        return self.proc.returncode


@contextmanager
def running_stage(stage: str, *args: str, tmp_path: Path, speed: float = 20) -> Iterator[Stage]:
    """Start python3 <repo>/<stage>/server.py --port 0 --host 127.0.0.1 --speed SPEED
    [--log tmp_path/log.txt for test5+] *args as a subprocess; wait (bounded, ~10 s)
    for its `listening on ws[s]://...:PORT/` line; yield; always terminate it
    (SIGTERM, then kill after a bound)."""
    command = [sys.executable, str(REPO / stage / "server.py"),
               "--port", "0", "--host", "127.0.0.1", "--speed", str(speed)]
    log_path = None
    if stage_has_log(stage):
        log_path = tmp_path / "log.txt"
        command += ["--log", str(log_path)]
    for option, value in zip(args, args[1:]):
        if option == "--log":  # the caller's own --log wins, as in argparse (the last one)
            log_path = Path(value)
    command += args
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    running = Stage(proc, log_path)
    try:
        running._wait_listening(START_TIMEOUT)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        running._reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()

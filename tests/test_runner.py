"""common/runner.py: the --port type and the log that is opened only once the port is bound.

Plain function calls, no sockets: argparse as the stages use it, files in
tmp_path. How the stages use both (a second server on a busy port moves no
log aside) is in tests/test_stages.py.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # make "common" importable

from common import runner  # noqa: E402


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

"""What every stage's ``main()`` repeats around :func:`~common.serve`, written once.

Two pieces, both about starting safely:

* :func:`port`, an ``argparse`` type for ``--port``: a TCP port from 1 to
  65535, or 0 for "pick a free one". Anything else (``99999``, ``-1``,
  ``abc``) is refused by argparse itself, with exit code 2 and a one-line
  message, before the server touches anything::

      parser.add_argument("--port", type=runner.port, default=5678)

* :func:`open_log`, which starts a fresh log and keeps the previous run's as
  ``PATH.1``. It must be called *after* ``serve()`` has bound the port: a
  second server started by mistake on a port that is in use then fails
  before it moves the running server's log aside::

      async with serve(handler, host, port) as server:    # the port is ours, or serve() raised
          log = runner.open_log(path)                    # only now is the old log renamed

  When the log cannot be written (a missing folder, a folder, a full disk),
  it raises :class:`LogError` and leaves every file as it was.
"""

from __future__ import annotations

import argparse
import errno
import re
import shutil
from pathlib import Path
from typing import TextIO

__all__ = ["port", "open_log", "LogError"]


def port(text: str) -> int:
    """``argparse`` type: a TCP port, 1 to 65535, or 0 to let the system pick a free one.

    Raises :class:`argparse.ArgumentTypeError` for anything else, which
    argparse reports as ``error: argument --port: ...`` with exit code 2.
    """
    # Digits only: int() would also take " 80", "+80", "8_0" and "-1".
    if re.fullmatch(r"[0-9]{1,5}", text) is None or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: give 1 to 65535, or 0 to pick a free one")
    return int(text)


class LogError(OSError):
    """The log cannot be written; the message says which file and why."""


def open_log(path: Path) -> TextIO:
    """Start a fresh log at ``path``, keeping the previous one (if not empty) as ``PATH.1``.

    Call it once the server listens, never before: a server that cannot
    start must not rename the log of another one that runs. The file is
    line-buffered, so each line reaches the file whole, as it is written.

    Raises :class:`LogError` (an :class:`OSError`) if the log cannot be
    written: its folder is missing, ``path`` is a folder, or the disk is
    full. Nothing has been renamed then; a full disk is seen before anything
    is renamed, rather than at the first sample.
    """
    backup = Path(f"{path}.1")
    try:
        if path.parent.is_dir() and shutil.disk_usage(path.parent).free == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        rotated = path.is_file() and path.stat().st_size > 0
        if rotated:
            path.replace(backup)
        try:
            return open(path, "w", encoding="utf-8", buffering=1)
        except OSError:
            if rotated:                 # put the previous log back where it was
                backup.replace(path)
            raise
    except OSError as exc:
        raise LogError(f"cannot write the log {path}: {exc.strerror or exc}") from exc

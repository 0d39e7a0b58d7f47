"""Run the tests, getting pytest first if this Python lacks it:  python3 tests/run.py [pytest args]

The README's test line. It runs ``python3 -m pytest ARGS`` at the project
root, whatever the current directory (so file arguments are relative to the
root: ``python3 tests/run.py -x tests/test_frames.py``), and ends with
pytest's exit status. It takes the first of these that works, and says which
in one line whenever it installs something:

1. this Python has pytest: run it, installing nothing;
2. ``.venv/`` at the project root has pytest: run the tests with its Python;
3. ``python3 -m pip install pytest`` works: run the tests;
4. pip refuses (a system Python marked "externally managed", PEP 668) or is
   missing: make ``.venv/`` (``python3 -m venv .venv``), install pytest
   there and run the tests with its Python. The tests start their
   subprocesses with ``sys.executable``, so these run there too;
5. none of this is possible (venv cannot make ``.venv`` without ensurepip,
   as on Debian or Ubuntu without python3-venv): say in one line what to
   install, and exit with status 1.

Standard library only: it runs before anything else is installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
PYTHON = sys.executable                  # "python3" in the steps above: the one running this file
PIP_INSTALL = ["-m", "pip", "install", "-q", "--disable-pip-version-check", "pytest"]
CANNOT = (
    "tests/run.py: no pytest for {python}, and no way to install it (pip cannot, and venv lacks"
    " ensurepip): install python3-venv (apt-get install python3-venv) or python3-pytest, then run this again"
)


def say(line: str) -> None:
    """One line about what is being installed, before pytest's own output."""
    print(f"tests/run.py: {line}", flush=True)


def has_module(name: str) -> bool:
    """Whether this Python can import ``name``, without importing it."""
    return importlib.util.find_spec(name) is not None


def this_python_has_pytest() -> bool:
    """Step 1."""
    return has_module("pytest")


def venv_has_pytest() -> bool:
    """Step 2: ``.venv`` exists and its Python imports pytest."""
    if not VENV_PYTHON.exists():
        return False
    check = subprocess.run([VENV_PYTHON, "-c", "import pytest"], capture_output=True, check=False)
    return check.returncode == 0


def install_with_pip() -> bool:
    """Step 3: ``python3 -m pip install pytest``; False where pip is missing or refuses."""
    if not has_module("pip"):
        return False
    # pip's output is held back: a refusal (PEP 668's long explanation) is not the end, step 4 follows.
    result = subprocess.run([PYTHON, *PIP_INSTALL], capture_output=True, check=False)
    if result.returncode != 0:
        return False
    say(f"installed pytest for {PYTHON} with pip")
    return True


def install_into_venv() -> bool:
    """Step 4: make ``.venv`` with pip in it and install pytest there; False where venv cannot."""
    if not (has_module("venv") and has_module("ensurepip")):    # ensurepip puts pip into .venv
        return False
    say(f"pip cannot install pytest for {PYTHON}: installing it into .venv (python3 -m venv .venv)")
    if subprocess.run([PYTHON, "-m", "venv", VENV], check=False).returncode != 0:
        sys.exit("tests/run.py: python3 -m venv .venv failed (its error is above)")
    if subprocess.run([VENV_PYTHON, *PIP_INSTALL], check=False).returncode != 0:
        sys.exit("tests/run.py: pip could not install pytest into .venv (its error is above)")
    return True


def choose_python() -> str | None:
    """The Python to run pytest with, installing pytest if need be (steps 1-4); None where nothing works."""
    if this_python_has_pytest():
        return PYTHON
    if venv_has_pytest():
        return str(VENV_PYTHON)
    if install_with_pip():
        return PYTHON
    if install_into_venv():
        return str(VENV_PYTHON)
    return None


def run_pytest(python: str, args: list[str]) -> None:
    """Run ``python -m pytest ARGS`` at the project root, and exit with its status.

    On POSIX this process becomes pytest (exec): Ctrl-C and the exit status are pytest's own.
    """
    os.chdir(ROOT)
    command = [python, "-m", "pytest", *args]
    if os.name == "posix":
        os.execv(python, command)
    sys.exit(subprocess.call(command))


def main(args: list[str]) -> None:
    python = choose_python()
    if python is None:
        sys.exit(CANNOT.format(python=PYTHON))        # step 5: one line on stderr, status 1
    run_pytest(python, args)


if __name__ == "__main__":
    main(sys.argv[1:])

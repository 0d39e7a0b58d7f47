"""``python3 tests/run.py``, the README's test line: it gets pytest where it can, and says what to install where it cannot.

Its choice (tests/run.py's steps 1-5) is checked with fake steps, so nothing is
installed; then the script itself runs as a subprocess: with this Python,
which has pytest, from another directory; with pytest hidden and a ``.venv``
that has it; and with pytest, pip and venv all hidden, where it must end with
one line and status 1. A hidden module is one set to None in sys.modules
before the script runs, so that it cannot be found nor imported. Nothing here
reaches a package index (PIP_NO_INDEX is set for the subprocesses).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "tests" / "run.py"

# Runs run.py (argv[2]) as __main__ with the comma-separated modules of argv[1] hidden.
HIDING = (
    "import runpy, sys\n"
    "sys.modules.update(dict.fromkeys(sys.argv[1].split(',')))\n"
    "sys.argv = sys.argv[2:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def load_run() -> ModuleType:
    """tests/run.py as a module of its own name (bench/ has a run.py of its own)."""
    spec = importlib.util.spec_from_file_location("tests_run_line", RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run(monkeypatch):
    """run.py with every step faked as failing and pytest not run: a test makes the steps it wants work."""
    module = load_run()
    calls: list[str] = []

    def step(name):
        def fake():
            calls.append(name)
            return name in module.working
        return fake

    module.working = set()
    module.calls = calls
    for name in ("this_python_has_pytest", "venv_has_pytest", "install_with_pip", "install_into_venv"):
        monkeypatch.setattr(module, name, step(name))
    monkeypatch.setattr(module, "run_pytest", lambda python, args: calls.append(f"pytest with {python} {args}"))
    return module


def run_script(tmp_path: Path, *args: str, hidden: str = "", project: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``python3 <project>/tests/run.py ARGS`` from tmp_path, with the modules named in ``hidden`` hidden."""
    script = str(project / "tests" / "run.py")
    command = [sys.executable, "-c", HIDING, hidden, script] if hidden else [sys.executable, script]
    env = {**os.environ, "PIP_NO_INDEX": "1"}                 # were pip to run by mistake, it fetches nothing
    return subprocess.run([*command, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def project_copy(tmp_path: Path) -> Path:
    """A project of run.py alone (its root is where .venv would go), in tmp_path/project."""
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    shutil.copy(RUN, project / "tests" / "run.py")
    return project


# ------------------------------------------------------------------ the choice, with fake steps

def test_a_python_with_pytest_runs_it_and_installs_nothing(run):
    run.working = {"this_python_has_pytest"}
    run.main(["-x"])
    assert run.calls == ["this_python_has_pytest", f"pytest with {sys.executable} ['-x']"]


def test_a_venv_with_pytest_comes_before_installing(run):
    run.working = {"venv_has_pytest"}
    run.main([])
    assert run.calls == ["this_python_has_pytest", "venv_has_pytest", f"pytest with {run.VENV_PYTHON} []"]


def test_pip_is_tried_before_making_a_venv(run):
    run.working = {"install_with_pip", "install_into_venv"}
    run.main([])
    assert run.calls == ["this_python_has_pytest", "venv_has_pytest", "install_with_pip",
                         f"pytest with {sys.executable} []"]


def test_where_pip_refuses_pytest_goes_into_a_new_venv(run):
    run.working = {"install_into_venv"}
    run.main(["tests/test_frames.py"])
    assert run.calls[-2:] == ["install_into_venv", f"pytest with {run.VENV_PYTHON} ['tests/test_frames.py']"]


def test_where_nothing_works_one_line_says_what_to_install(run):
    with pytest.raises(SystemExit) as stopped:
        run.main([])
    message = stopped.value.code
    assert isinstance(message, str) and "\n" not in message          # sys.exit(str): stderr, status 1
    assert "apt-get install python3-venv" in message and "python3-pytest" in message
    assert not any(call.startswith("pytest with") for call in run.calls)


def test_a_missing_venv_is_not_one_with_pytest(tmp_path, monkeypatch):
    module = load_run()
    monkeypatch.setattr(module, "VENV_PYTHON", tmp_path / ".venv" / "bin" / "python")
    assert module.venv_has_pytest() is False


def test_no_venv_is_made_without_ensurepip(tmp_path, monkeypatch):
    module = load_run()
    monkeypatch.setattr(module, "VENV", tmp_path / ".venv")
    monkeypatch.setitem(sys.modules, "ensurepip", None)
    assert module.install_into_venv() is False
    assert not (tmp_path / ".venv").exists()


# ------------------------------------------------------------------ the script itself

def test_with_this_python_it_runs_pytest_from_any_directory(tmp_path):
    """The normal path: pytest's collection of a file named from the root, nothing installed, no .venv made."""
    had_venv = (ROOT / ".venv").exists()
    result = run_script(tmp_path, "-q", "--co", "-p", "no:cacheprovider", "tests/test_frames.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tests collected" in result.stdout
    assert "tests/run.py:" not in result.stdout + result.stderr                  # nothing installed
    assert (ROOT / ".venv").exists() == had_venv


def test_the_exit_status_is_pytests(tmp_path):
    """An option pytest does not know: its usage error, status 4, at the project root."""
    result = run_script(tmp_path, "--no-such-option")
    assert result.returncode == 4
    assert "unrecognized arguments: --no-such-option" in result.stderr
    assert f"rootdir: {ROOT}" in result.stderr


@pytest.mark.skipif(os.name != "posix", reason="the fake .venv Python is a shell script")
def test_without_pytest_a_venv_that_has_it_is_used(tmp_path):
    project = project_copy(tmp_path)
    fake = project / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text(f'#!/bin/sh\n[ "$1" = -m ] && echo "fake .venv python" >&2\nexec "{sys.executable}" "$@"\n')
    fake.chmod(0o755)
    result = run_script(tmp_path, "--version", hidden="pytest", project=project)
    assert result.returncode == 0, result.stderr
    assert "fake .venv python" in result.stderr and "pytest" in result.stdout + result.stderr
    assert "tests/run.py:" not in result.stdout + result.stderr                  # nothing installed


def test_without_pytest_pip_nor_venv_it_says_what_to_install_in_one_line(tmp_path):
    project = project_copy(tmp_path)
    result = run_script(tmp_path, "-q", hidden="pytest,pip,venv,ensurepip", project=project)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("tests/run.py: no pytest for ")
    assert "apt-get install python3-venv" in result.stderr
    assert not (project / ".venv").exists()

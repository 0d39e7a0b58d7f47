"""The shape of the package: its import graph, its lazy names, the keyword arguments of serve() and connect().

The protocol's modules (frames, protocol, http11, handshake, deflate, explain,
exceptions) work on bytes and can be used without an event loop; they must
not load asyncio, not even through common/__init__.py, which imports its
public names on first use (PEP 562). Each such check runs in a fresh
interpreter, since this one has long imported everything. No module of
common/ imports one that imports it back. serve() and connect() take the
connection's options as ``**options`` (common/options.py), whose defaults
only Connection.__init__ writes out.
"""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from common import connect, serve
from common.connection import Connection
from common.options import CONNECTION_OPTIONS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "common"
SANS_IO = ["frames", "protocol", "http11", "handshake", "deflate", "exceptions", "explain", "observer"]


def run(code: str) -> str:
    """Run ``code`` in a fresh interpreter at the repository root; return its output."""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("module", SANS_IO)
def test_a_module_without_io_loads_no_asyncio(module):
    """Importing a sans-I/O module (and the package around it) leaves asyncio unloaded."""
    assert run(f"import sys, common.{module}; print('asyncio' in sys.modules)") == "False"


def test_all_sans_io_modules_together_load_no_asyncio():
    """The brief's own check: the six modules at once."""
    modules = ", ".join(f"common.{name}" for name in SANS_IO)
    assert run(f"import {modules}, sys; print('asyncio' in sys.modules)") == "False"


def test_public_names_are_imported_on_first_use():
    """Every name of __all__ resolves, `from common import runner` finds the submodule, dir() lists the names."""
    output = run(
        "import sys, common\n"
        "assert 'asyncio' not in sys.modules\n"
        "from common import *\n"
        "import common.broadcast\n"          # the submodule does not hide the function of the same name
        "from common import broadcast, runner, serve\n"
        "assert callable(broadcast) and runner.__name__ == 'common.runner'\n"
        "assert all(getattr(common, name) is globals()[name] for name in common.__all__)\n"
        "assert set(common.__all__) <= set(dir(common))\n"
        "print(len(common.__all__))\n"
    )
    assert int(output) >= 29


def test_submodule_imported_first_does_not_hide_broadcast():
    """`import common.broadcast` before any use of the name leaves common.broadcast the function."""
    code = "import sys, common.broadcast; print(common.broadcast is sys.modules['common.broadcast'].broadcast)"
    assert run(code) == "True"


def test_an_unknown_name_raises_attribute_error():
    """PEP 562: a name that is neither public nor a submodule is an AttributeError."""
    assert run(
        "import common\n"
        "try:\n    common.no_such_name\nexcept AttributeError as exc:\n    print(exc)\n"
    ) == "module 'common' has no attribute 'no_such_name'"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """The modules of common/ a module imports at run time, wherever the import statement stands.

    Imports inside functions count (they run when called); those under
    ``if TYPE_CHECKING:`` do not. ``from . import name`` is an import of the
    submodule ``name`` when there is one, else of the package itself.
    """
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            # "from .x import y" (level 1) or "from common.x import y": x, or "" for the package.
            module = node.module or ""
            inside = node.level == 1 or module == "common" or module.startswith("common.")
            base = module if node.level == 1 else module.removeprefix("common").lstrip(".")
            if inside and base:
                found.add(base.split(".")[0])
            elif inside:
                found.update(alias.name if alias.name in modules else "__init__" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.split(".")[1] for alias in node.names if alias.name.startswith("common.")
            )
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    return {
        path.stem: _imports(ast.parse(path.read_text(encoding="utf-8")), modules) - {path.stem}
        for path in sorted(PACKAGE.glob("*.py"))
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a path that returns to its start, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph.get(node, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return None


def test_find_cycle_finds_one():
    """The checker itself: a two-module cycle is found, a chain is not."""
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_has_no_cycles():
    """No module of common/ imports, directly or not, a module that imports it back."""
    graph = import_graph()
    assert graph["frames"] == {"exceptions"} and graph["exceptions"] == set(), graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


# ---------------------------------------------------- serve() and connect()

# The keyword arguments each took before the options were defined once.
CONNECTION_KEYWORDS = {"max_size", "max_queue", "ping_interval", "ping_timeout", "close_timeout", "write_limit"}
SERVE_KEYWORDS = {"process_request", "origins", "hosts", "subprotocols", "compression", "open_timeout", "ssl"}
CONNECT_KEYWORDS = {"origin", "extra_headers", "subprotocols", "compression", "open_timeout", "ssl"}


def test_the_options_are_the_connections_keyword_arguments():
    """ConnectionOptions names exactly Connection.__init__'s options, the one place their defaults are written."""
    parameters = inspect.signature(Connection).parameters
    own = {name for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY} - {"extension", "subprotocol"}
    assert CONNECTION_OPTIONS == own == CONNECTION_KEYWORDS
    for function in (serve, connect):
        assert not CONNECTION_OPTIONS & set(inspect.signature(function).parameters), function


@pytest.mark.parametrize("name", sorted(CONNECTION_KEYWORDS | CONNECT_KEYWORDS))
def test_connect_accepts_the_same_keywords_as_before(name):
    """Every keyword connect() took is still accepted; a connection option reaches the connection."""
    client = connect("ws://localhost/", **{name: None})
    assert (name in client.options) == (name in CONNECTION_KEYWORDS)


@pytest.mark.parametrize("name", sorted(CONNECTION_KEYWORDS | SERVE_KEYWORDS | {"backlog", "reuse_port"}))
def test_serve_accepts_the_same_keywords_as_before(name):
    """Every keyword serve() took is still accepted: a connection's option goes to each connection, an
    option of asyncio.start_server() to it."""
    value = "deflate" if name == "compression" else None
    server = serve(lambda ws: None, **{name: value})
    assert (name in server.server.connection_options) == (name in CONNECTION_KEYWORDS)
    assert (name in server.kwargs) == (name in {"ssl", "backlog", "reuse_port"})


@pytest.mark.parametrize("call", [lambda: connect("ws://localhost/", max_sise=1), lambda: serve(print, max_sise=1)])
def test_an_unknown_keyword_is_a_type_error_naming_it(call):
    """A misspelt option fails at the call, as for any Python function, not later or silently."""
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'max_sise'"):
        call()

"""Every stage's server.py uses everything it defines: a learner reads no dead code.

Each stage is read top to bottom and diffed against its neighbours, so a
function that nothing calls costs a learner twice: once to read it, once to
find out that it does not matter. unused_definitions() parses a server with
`ast` and lists each function, method and class that nothing in the same file
refers to. Standard library only. The pages have their own check
(tests/test_page_hygiene.py).

"Used" means: its name is read somewhere in the file outside its own body
(a call, a callback handed over, `functools.partial(handler, ...)`), or, for
a method, any attribute of that name is read (`self.read()`,
`sensor.read()`: which object it is on is not worked out). Module constants
must be read too, and an attribute that is stored (`self.error = exc`) must
be read somewhere as well. Not counted:
dunder methods (`__init__`, Python calls them), and the few methods that a
framework calls by name (FRAMEWORK_METHODS).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAGES = sorted(path.parent.name for path in REPO.glob("test*/server.py"))

#: Methods that a framework calls by their name, never this file: asyncio's
#: protocol callbacks, threading.Thread.run, logging's filter and emit.
FRAMEWORK_METHODS = frozenset({
    "connection_made", "connection_lost", "data_received", "eof_received", "pause_writing", "resume_writing",
    "datagram_received", "error_received", "buffer_updated", "get_buffer", "run", "filter", "emit", "format",
})

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _definitions(tree: ast.Module) -> list[tuple[Definition, bool]]:
    """Every function and class the module defines, at any depth, each with "is it a method?"."""
    found: list[tuple[Definition, bool]] = []

    def visit(node: ast.AST, in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found.append((child, in_class and not isinstance(child, ast.ClassDef)))
                visit(child, isinstance(child, ast.ClassDef))
            else:
                visit(child, in_class)
    visit(tree, False)
    return found


def unused_definitions(source: str) -> list[str]:
    """What `source` defines but never uses: functions, methods and classes by name, module
    constants by name, attributes stored but never read as ``.name``."""
    tree = ast.parse(source)
    # (name, line) of every name read and every attribute taken, anywhere in the file.
    references = [(node.id, node.lineno) for node in ast.walk(tree)
                  if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)]
    references += [(node.attr, node.lineno) for node in ast.walk(tree) if isinstance(node, ast.Attribute)]
    unused = []
    for definition, is_method in _definitions(tree):
        name = definition.name
        if name.startswith("__") and name.endswith("__"):
            continue
        if is_method and name in FRAMEWORK_METHODS:
            continue
        first = min([definition.lineno] + [decorator.lineno for decorator in definition.decorator_list])
        last = definition.end_lineno or definition.lineno
        # A use inside its own body (recursion) does not count: nothing else would call it.
        if not any(ref == name and not first <= line <= last for ref, line in references):
            unused.append(name)
    # Module constants never read, and attributes stored (self.error = ...) but never read.
    loaded = {name for name, _ in references}
    for statement in tree.body:
        targets = statement.targets if isinstance(statement, ast.Assign) else (
            [statement.target] if isinstance(statement, ast.AnnAssign) else [])
        unused += [target.id for target in targets
                   if isinstance(target, ast.Name) and not target.id.startswith("__") and target.id not in loaded]
    stored = [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)]
    read = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)}
    unused += [f".{attr}" for attr in dict.fromkeys(stored) if attr not in read]
    return unused


@pytest.mark.parametrize("stage", STAGES)
def test_every_definition_in_a_stage_server_is_used(stage):
    """Each function, method and class that a stage's server.py defines is used in that file."""
    source = (REPO / stage / "server.py").read_text(encoding="utf-8")
    assert unused_definitions(source) == [], f"{stage}/server.py defines what it never uses"


def test_the_stages_are_all_checked():
    """test1 to test9 and test4b: no stage escapes the check."""
    assert STAGES == ["test1", "test2", "test3", "test4", "test4b", "test5", "test6", "test7", "test8", "test9"]


DEAD = '''
import asyncio

LIMIT = 10

class Acquisition:
    def __init__(self):
        self.on = False
        self.error = None

    def switch(self, on):
        self.on = on

    def forgotten(self):
        return self.on

async def send_readings(ws, acquisition):
    """Copied from an earlier stage, never called."""
    while True:
        await send_readings(ws, acquisition)    # calling itself is no use from outside

class Unused:
    pass

async def handler(ws, acquisition):
    acquisition.switch(True)

def main():
    asyncio.run(handler(None, Acquisition()))

main()
'''


def test_a_dead_function_put_back_is_reported():
    """An uncalled function, method and class are named, a function that only calls itself too; so are a
    constant never read and an attribute only ever written."""
    assert unused_definitions(DEAD) == ["forgotten", "send_readings", "Unused", "LIMIT", ".error"]


def test_uses_by_reference_count():
    """A function handed over as a callback, or a method read as an attribute, is used; dunders and
    framework callbacks need no caller in the file."""
    source = '''
import functools, threading

class Sensor(threading.Thread):
    def __init__(self):
        super().__init__()

    def run(self):
        pass

    def sample(self):
        pass

def handler(ws, stop):
    pass

def only_known_paths(path, headers):
    return None

thread = threading.Thread(target=Sensor().sample)
thread.start()
serve(functools.partial(handler, stop=None), process_request=only_known_paths)
'''
    assert unused_definitions(source) == []

"""The package's layers point one way (docs/design.md, "Layers"): every module is imported, and every import of
the package's own modules, at the top of a file or inside a function, goes to its own layer or one below."""
import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import stableaudio_jax

# lowest first; a module may import from its own layer or any layer below
LAYERS = [
    {"audio", "diffusion", "parallel", "config_loader", "paths"},
    {"models"},
    {"store"},
    {"data", "convert"},
    {"training", "inference", "evaluation", "bench"},
    {"commands", "cli"},
]
LEVEL = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
FORBIDDEN_SIDEWAYS = {("inference", "training"), ("training", "inference"), ("data", "convert"),
                      ("convert", "data"), ("inference", "evaluation"), ("training", "evaluation")}
ROOT = Path(stableaudio_jax.__file__).parent


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "stableaudio_jax" or len(parts) < 2 or parts[1].startswith("__"):
        return None  # not ours, or the package root (its __version__)
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of a ``stableaudio_jax`` module in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if node.module == "stableaudio_jax"]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m.startswith("stableaudio_jax.")]


def _package_files():
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        room = relative.parts[0].removesuffix(".py")
        if room in ("__init__", "configs"):
            continue
        yield room, path


def test_every_room_has_a_layer():
    rooms = {room for room, _ in _package_files()}
    assert rooms <= set(LEVEL), f"rooms without a layer: {sorted(rooms - set(LEVEL))}"


def test_imports_point_down():
    wrong = []
    for room, path in _package_files():
        for line, module in _imports(path):
            target = _room(module)
            if target is None or target == room or target == "configs":
                continue
            if target not in LEVEL:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module} (no layer)")
            elif LEVEL[target] > LEVEL[room] or (room, target) in FORBIDDEN_SIDEWAYS:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({room}, layer {LEVEL[room]}) imports {module} "
                             f"({target}, layer {LEVEL[target]})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


@pytest.mark.parametrize("name", sorted(m.name for m in pkgutil.walk_packages(stableaudio_jax.__path__,
                                                                              "stableaudio_jax.")))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_the_checker_sees_a_violation(tmp_path):
    """The test above can fail: an upward import written into a file is found."""
    path = tmp_path / "bad.py"
    path.write_text("def f():\n    from stableaudio_jax.training.loop import run_loop\n")
    assert _imports(path) == [(2, "stableaudio_jax.training.loop")]
    assert LEVEL[_room("stableaudio_jax.training.loop")] > LEVEL["store"]


def _module_graph() -> dict[str, set[str]]:
    """{module: the package modules it imports}, top-level and function-level imports alike."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = ("stableaudio_jax",) + path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` imports the module pkg.sub (and pkg's __init__, which does not count here)
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                            for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that reach each other through imports (strongly connected, more than one module)."""
    order, low, stack, found, counter = {}, {}, [], [], [0]

    def visit(node):
        order[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return found


def test_no_import_circles():
    """No modules import each other, directly or round a loop, not even through a function-level import (which
    only hides a circle)."""
    assert _circles(_module_graph()) == []
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check sees one


MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 50  # training/ stays in small rooms (issue 27)


def _too_long(folder: Path) -> list[str]:
    """Files of ``folder`` over MAX_FILE_LINES lines and functions (methods and nested ones too) over
    MAX_FUNCTION_LINES, from the ``def`` line to the last line of the body."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE_LINES:
            found.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path.name}:{node.lineno} {node.name}: {length} lines")
    return found


def test_training_files_and_functions_are_small():
    assert _too_long(ROOT / "training") == []


def test_the_size_check_sees_a_long_file_and_a_long_function(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))  # the def line makes it one too long
    (tmp_path / "long.py").write_text("class A:\n    def f(self):\n" + body.replace("    ", "        ")
                                      + "\n" * (MAX_FILE_LINES - MAX_FUNCTION_LINES))
    (tmp_path / "fits.py").write_text("def g():\n" + "".join(body.splitlines(True)[:-1]))
    assert _too_long(tmp_path) == [f"long.py: {MAX_FILE_LINES + 2} lines",
                                   f"long.py:2 f: {MAX_FUNCTION_LINES + 1} lines"]

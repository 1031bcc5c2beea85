"""Which package files a notebook or a ``python -m`` entry point imports: the Makefile's per-part dependencies.

    python3 lib/deltalens/tools/deps.py notebooks/01_synthetic.ipynb    # -> lib/deltalens/__init__.py ... (one line)
    python3 lib/deltalens/tools/deps.py deltalens.codelm                # a module run with python -m
    python3 lib/deltalens/tools/deps.py --house                         # the package drawn floor by floor, and its circles

Static, from the source text alone (``ast``; no import is executed, no third-party package needed, so ``make`` can
call it with any Python 3 before the environment exists): the ``deltalens`` imports of the notebook's code cells (or
of the module), then, recursively, every import of a ``deltalens`` module inside those files — including imports
inside functions (lazy imports count: they run when the function does) and relative ones — plus the ``__init__.py``
of every package on the way. The package has no dynamic imports (``importlib.import_module``); a test checks that.
A notebook then reruns when a module it can execute changes, not when any file of the package does.

The same reading draws the package's house (:func:`module_graph`, :func:`import_cycles`, :func:`floors`): an arrow
from a module to each ``deltalens`` module it imports (``from pkg import sub`` points at ``pkg.sub``; the parent
packages' ``__init__`` that Python runs on the way are not arrows), the circles in it, and the subpackages stacked
so that every arrow between them points down. ``tests/test_layout.py`` keeps the house free of circles.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parents[2]  # lib/
PACKAGE = "deltalens"


def module_file(name: str) -> Path | None:
    """``deltalens.a.b`` -> lib/deltalens/a/b.py or lib/deltalens/a/b/__init__.py (None if neither exists)."""
    base = LIB.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(LIB).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _from_module(node: ast.ImportFrom, current: str | None, is_package: bool) -> str | None:
    """The absolute module of a ``from ... import``, None when it is not one of the package's."""
    if node.level:
        if current is None:
            return None
        base = current.split(".") if is_package else current.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    return mod if mod.split(".")[0] == PACKAGE else None


def imported_modules(source: str, current: str | None = None, is_package: bool = False) -> set[str]:
    """The ``deltalens`` modules that ``source`` imports anywhere (module names; a ``from pkg import name`` counts
    ``pkg.name`` when that is a module, else ``pkg``). ``current``: the module the source belongs to (for relative
    imports)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            mod = _from_module(node, current, is_package)
            if mod is None:
                continue
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names if module_file(f"{mod}.{a.name}") is not None}
    return out


def import_arrows(source: str, current: str, is_package: bool = False) -> set[str]:
    """The package modules ``source`` points at: ``from pkg import sub`` at ``pkg.sub`` alone, ``from mod import
    name`` at ``mod``; unlike :func:`imported_modules`, the parent packages Python runs on the way are no arrows."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            mod = _from_module(node, current, is_package)
            if mod is None:
                continue
            subs = {f"{mod}.{a.name}" for a in node.names if module_file(f"{mod}.{a.name}") is not None}
            out |= subs
            if len(subs) < len(node.names):
                out.add(mod)
    return {m for m in out if module_file(m) is not None and m != current}


def module_graph() -> dict[str, set[str]]:
    """Every module of the package -> the package modules it imports (anywhere in its file, lazy imports too)."""
    return {_module_name(f): import_arrows(f.read_text(), _module_name(f), f.name == "__init__.py")
            for f in sorted((LIB / PACKAGE).rglob("*.py"))}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself): the circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the package is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def room(module: str) -> str:
    """The subpackage a module lives in (``deltalens.lm.forward`` -> ``lm``); the package root is ``deltalens``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Subpackage -> the other subpackages its modules import."""
    out: dict[str, set[str]] = {}
    for m, deps in graph.items():
        out.setdefault(room(m), set()).update(room(d) for d in deps if room(d) != room(m))
    return out


def floors(rooms: dict[str, set[str]]) -> list[list[str]]:
    """Subpackages stacked bottom-up: each on the floor above the highest one it imports (needs no circles)."""
    level: dict[str, int] = {}

    def floor_of(r: str, path: tuple = ()) -> int:
        if r in path:
            raise ValueError(f"import circle between subpackages: {' -> '.join(path + (r,))}")
        if r not in level:
            level[r] = 1 + max((floor_of(d, path + (r,)) for d in rooms.get(r, ())), default=-1)
        return level[r]

    for r in rooms:
        floor_of(r)
    return [sorted(r for r in level if level[r] == i) for i in range(max(level.values(), default=-1) + 1)]


def house() -> str:
    """The drawing ``--house`` prints: floors top-down with each subpackage's arrows, then the circles."""
    graph = module_graph()
    rooms = room_graph(graph)
    lines = [f"{len(graph)} modules, {sum(map(len, graph.values()))} arrows"]
    try:
        stacked = floors(rooms)
    except ValueError as e:
        stacked = []
        lines.append(str(e))
    for i, fl in reversed(list(enumerate(stacked))):
        lines.append(f"floor {i}: " + "   ".join(f"{r} -> {', '.join(sorted(rooms[r])) or '-'}" for r in fl))
    cycles = import_cycles(graph)
    lines.append(f"{len(cycles)} import circle(s)" + "".join(f"\n  {' <-> '.join(c)}" for c in cycles))
    return "\n".join(lines)


def _sources(entry: str) -> list[tuple[str, str | None, bool]]:
    """(source text, module name, is package) of an entry: a notebook, a .py file, or a module name."""
    p = Path(entry)
    if p.suffix == ".ipynb":
        nb = json.loads(p.read_text())
        code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        lines = "\n".join(code).splitlines()  # IPython magics and shell escapes are not Python
        return [("\n".join(line for line in lines if not line.lstrip().startswith(("%", "!"))), None, False)]
    if p.suffix == ".py":
        return [(p.read_text(), None, False)]
    f = module_file(entry)
    if f is None:
        raise SystemExit(f"deps: {entry!r} is neither a notebook, a .py file nor a module of {PACKAGE}")
    out = [(f.read_text(), entry, f.name == "__init__.py")]
    main = f.parent / "__main__.py" if f.name == "__init__.py" else None
    if main is not None and main.is_file():  # python -m package runs its __main__
        out.append((main.read_text(), entry + ".__main__", False))
    return out


def closure(entries: list[str]) -> list[Path]:
    """Every package file the entries can import, sorted."""
    todo: set[str] = set()
    for entry in entries:
        for src, name, is_pkg in _sources(entry):
            todo |= imported_modules(src, name, is_pkg)
            if name is not None:
                todo.add(name)
    seen: set[str] = set()
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts)):  # parent packages' __init__ run first
            todo.add(".".join(parts[:i]))
        f = module_file(name)
        if f is None:  # a name imported from a module (a function, a class): its module is already counted
            continue
        files.add(f)
        todo |= imported_modules(f.read_text(), name, f.name == "__init__.py")
    return sorted(files)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    if argv == ["--house"]:
        print(house())
        return 0
    root = LIB.parent
    print(" ".join(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in closure(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

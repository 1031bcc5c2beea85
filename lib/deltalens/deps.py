"""Which package files a notebook or a ``python -m`` entry point imports: the Makefile's per-part dependencies.

    python3 lib/deltalens/deps.py notebooks/01_synthetic.ipynb          # -> lib/deltalens/__init__.py ... (one line)
    python3 lib/deltalens/deps.py deltalens.codelm                      # a module run with python -m

Static, from the source text alone (``ast``; no import is executed, no third-party package needed, so ``make`` can
call it with any Python 3 before the environment exists): the ``deltalens`` imports of the notebook's code cells (or
of the module), then, recursively, every import of a ``deltalens`` module inside those files — including imports
inside functions (lazy imports count: they run when the function does) and relative ones — plus the ``__init__.py``
of every package on the way. The package has no dynamic imports (``importlib.import_module``); a test checks that.
A notebook then reruns when a module it can execute changes, not when any file of the package does.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parent.parent  # lib/
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


def imported_modules(source: str, current: str | None = None, is_package: bool = False) -> set[str]:
    """The ``deltalens`` modules that ``source`` imports anywhere (module names; a ``from pkg import name`` counts
    ``pkg.name`` when that is a module, else ``pkg``). ``current``: the module the source belongs to (for relative
    imports)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if current is None:
                    continue
                base = current.split(".") if is_package else current.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != PACKAGE:
                continue
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names if module_file(f"{mod}.{a.name}") is not None}
    return out


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
    root = LIB.parent
    print(" ".join(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in closure(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

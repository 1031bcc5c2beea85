"""The AST index of a project (:class:`ProjectIndex`), with :mod:`ast` only: which line of a module uses which
definition of another module. Not an analysis of results (that is :mod:`deltalens.analysis`): the dataset builder,
the verifier and the Long Code Arena adapter read a project through it.

For every module of a project:

* ``defs``: its top-level definitions (``def``, ``class``, assignments to a plain name) that are defined exactly once,
  with their line range (decorators included; 0-based, end exclusive);
* ``bindings``: the module-level names bound by imports of *project* modules, when the name is bound exactly once at
  module level (a name bound twice, e.g. in ``try: import a / except: a = None``, is ambiguous and dropped);
* ``uses``: for each line, the definitions of *other* modules of the project that the line uses, through a name
  imported with ``from m import name`` (re-exports followed to the module that really defines the name) or through
  an attribute chain on an imported module (``mod.sub.name``). A name shadowed by a local binding (argument,
  assignment, local import, comprehension variable, ...) in an enclosing function or class is not a use.

One module above the ~300-line guideline on purpose: the index runs the use collector on every module, and the
collector reads the index's bindings and resolves names through it; split, the two halves would import each other.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass, field

from .sources import Project, SourceFile


@dataclass(frozen=True)
class Definition:
    module: str
    name: str
    start: int  # 0-based first line (decorators included)
    end: int  # 0-based, exclusive
    kind: str  # 'def' | 'class' | 'assign'
    head: int = -1  # 0-based line of the 'def'/'class' keyword (after the decorators); start for assignments


@dataclass
class ModuleInfo:
    file: SourceFile
    lines: list[str]  # with their '\n'
    defs: dict[str, Definition] = field(default_factory=dict)
    bindings: dict[str, tuple] = field(default_factory=dict)  # name -> ('module', mod) | ('name', mod, orig)
    imports: set[str] = field(default_factory=set)  # project modules this module imports (direct)
    import_lines: set[int] = field(default_factory=set)  # 0-based lines spanned by import statements
    uses: dict[int, list[Definition]] = field(default_factory=dict)  # 0-based line -> definitions used
    used_names: dict[int, list[str]] = field(default_factory=dict)  # 0-based line -> names as written on the line


def split_lines(text: str) -> list[str]:
    """Lines with their '\\n' (the last one may lack it); consistent with ast line numbers for '\\n'-only text."""
    lines = text.split("\n")
    out = [ln + "\n" for ln in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def parse(text: str, path: str = "<unknown>") -> ast.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(text, filename=path)


def _top_level_statements(body):
    """Module-level statements, descending into if/try/with blocks (but not into def/class)."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.For, ast.While, ast.AsyncFor)):
            yield from _top_level_statements(stmt.body)
            yield from _top_level_statements(stmt.orelse)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            yield from _top_level_statements(stmt.body)
        elif isinstance(stmt, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            yield from _top_level_statements(stmt.body)
            for h in stmt.handlers:
                yield from _top_level_statements(h.body)
            yield from _top_level_statements(stmt.orelse)
            yield from _top_level_statements(stmt.finalbody)


def _store_names(node) -> list[str]:
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))]


def resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str | None:
    if level == 0:
        return target
    package = module if is_package else module.rpartition(".")[0]
    parts = package.split(".") if package else []
    if level - 1 > len(parts):
        return None
    base = parts[: len(parts) - (level - 1)]
    if target:
        base = base + target.split(".")
    return ".".join(base) if base else None


class ProjectIndex:
    """All modules of one project, with definitions, import bindings and per-line uses."""

    def __init__(self, project: Project):
        self.project = project
        self.modules: dict[str, ModuleInfo] = {}
        trees = {}
        for path in sorted(project.files):
            f = project.files[path]
            info = ModuleInfo(file=f, lines=split_lines(f.text))
            tree = parse(f.text, path)
            trees[f.module] = tree
            self.modules[f.module] = info
            self._collect_defs(info, tree)
        for mod, tree in trees.items():
            self._collect_bindings(self.modules[mod], tree)
        for mod, tree in trees.items():
            _UseCollector(self, self.modules[mod]).visit_module(tree)
        self.importers: dict[str, set[str]] = {m: set() for m in self.modules}
        for m, info in self.modules.items():
            for imp in info.imports:
                self.importers.setdefault(imp, set()).add(m)

    # -- definitions and bindings -------------------------------------------------------------------------------
    @staticmethod
    def _collect_defs(info: ModuleInfo, tree: ast.Module) -> None:
        counts: dict[str, int] = {}
        found: dict[str, Definition] = {}
        direct = {id(s) for s in tree.body}
        for stmt in _top_level_statements(tree.body):
            names = []
            head = stmt.lineno - 1
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                kind = "class" if isinstance(stmt, ast.ClassDef) else "def"
                start = min([stmt.lineno] + [d.lineno for d in stmt.decorator_list]) - 1
                names = [(stmt.name, kind, start)]
                head = stmt.lineno - 1
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                names = [(n, "assign", stmt.lineno - 1) for t in targets for n in _store_names(t)]
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                names = [((a.asname or a.name).split(".")[0], "import", stmt.lineno - 1) for a in stmt.names]
            elif isinstance(stmt, (ast.For, ast.AsyncFor, ast.With, ast.AsyncWith)):
                targets = [stmt.target] if isinstance(stmt, (ast.For, ast.AsyncFor)) else [
                    i.optional_vars for i in stmt.items if i.optional_vars is not None]
                names = [(n, "other", stmt.lineno - 1) for t in targets for n in _store_names(t)]
            for name, kind, start in names:
                counts[name] = counts.get(name, 0) + 1
                if kind in ("def", "class", "assign") and id(stmt) in direct:  # real top-level statement only
                    found[name] = Definition(info.file.module, name, start, stmt.end_lineno, kind, head)
        info.defs = {n: d for n, d in sorted(found.items()) if counts[n] == 1 and n != "__all__"}
        info._binding_counts = counts  # type: ignore[attr-defined]

    def _collect_bindings(self, info: ModuleInfo, tree: ast.Module) -> None:
        counts = info._binding_counts  # type: ignore[attr-defined]
        f = info.file
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                info.import_lines.update(range(node.lineno - 1, node.end_lineno))
        for stmt in _top_level_statements(tree.body):
            if isinstance(stmt, ast.Import):
                for a in stmt.names:
                    target = self._project_prefix(a.name)
                    if target is None:
                        continue
                    info.imports.add(self._deepest_module(a.name))
                    if a.asname:
                        if a.name in self.modules and counts.get(a.asname) == 1:
                            info.bindings[a.asname] = ("module", a.name)
                    else:
                        top = a.name.split(".")[0]
                        if top in self.modules and counts.get(top) == 1:
                            info.bindings[top] = ("module", top)
            elif isinstance(stmt, ast.ImportFrom):
                base = resolve_relative(f.module, f.is_package, stmt.level, stmt.module)
                if base is None:
                    continue
                for a in stmt.names:
                    if a.name == "*":
                        continue
                    bound = a.asname or a.name
                    sub = f"{base}.{a.name}"
                    if sub in self.modules:
                        info.imports.add(sub)
                        if counts.get(bound) == 1:
                            info.bindings[bound] = ("module", sub)
                    elif base in self.modules:
                        info.imports.add(base)
                        if counts.get(bound) == 1:
                            info.bindings[bound] = ("name", base, a.name)
        info.imports.discard(f.module)

    def _project_prefix(self, dotted: str) -> str | None:
        """``dotted`` when it names (a module under) a project package, else None."""
        return dotted if dotted in self.modules or dotted.split(".")[0] in self.modules else None

    def _deepest_module(self, dotted: str) -> str:
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in self.modules:
                return ".".join(parts[:i])
        return parts[0]

    # -- resolution -----------------------------------------------------------------------------------------------
    def resolve_name(self, module: str, name: str, depth: int = 0) -> Definition | None:
        """The definition that ``name`` in ``module`` refers to, following re-exports (``from .x import name``)."""
        info = self.modules.get(module)
        if info is None or depth > 8:
            return None
        if name in info.defs:
            return info.defs[name]
        b = info.bindings.get(name)
        if b is not None and b[0] == "name":
            return self.resolve_name(b[1], b[2], depth + 1)
        return None


class _UseCollector:
    """Walks one module keeping a stack of locally bound names; records uses of other modules' definitions."""

    def __init__(self, index: ProjectIndex, info: ModuleInfo):
        self.index = index
        self.info = info

    def visit_module(self, tree: ast.Module) -> None:
        self.visit(tree, frozenset())
        for line in list(self.info.uses):
            # unique, ordered by first appearance
            seen, defs, names = set(), [], []
            for d, n in zip(self.info.uses[line], self.info.used_names[line]):
                if (d.module, d.name) not in seen:
                    seen.add((d.module, d.name))
                    defs.append(d)
                    names.append(n)
            self.info.uses[line], self.info.used_names[line] = defs, names

    def _record(self, line: int, definition: Definition | None, written: str) -> None:
        if definition is None or definition.module == self.info.file.module:
            return
        self.info.uses.setdefault(line, []).append(definition)
        self.info.used_names.setdefault(line, []).append(written)

    @staticmethod
    def _locals(node) -> set[str]:
        names: set[str] = set()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
                if arg is not None:
                    names.add(arg.arg)
            body = node.body if isinstance(node.body, list) else [node.body]
        else:
            body = node.body
        for stmt in body:
            for n in ast.walk(stmt):
                if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
                    names.add(n.id)
                elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(n.name)
                elif isinstance(n, (ast.Import, ast.ImportFrom)):
                    names.update((a.asname or a.name).split(".")[0] for a in n.names)
                elif isinstance(n, ast.ExceptHandler) and n.name:
                    names.add(n.name)
                elif isinstance(n, (ast.Global, ast.Nonlocal)):
                    names.update(n.names)  # conservative: treat as shadowed
                elif hasattr(ast, "MatchAs") and isinstance(n, (ast.MatchAs, ast.MatchStar)) and n.name:
                    names.add(n.name)
                elif hasattr(ast, "MatchMapping") and isinstance(n, ast.MatchMapping) and n.rest:
                    names.add(n.rest)
        return names

    def visit(self, node, shadow: frozenset) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            outer = list(getattr(node, "decorator_list", [])) + list(node.args.defaults) + [
                d for d in node.args.kw_defaults if d is not None]
            if not isinstance(node, ast.Lambda):
                a = node.args
                outer += [x.annotation for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]
                          if x is not None and x.annotation is not None]
                if node.returns is not None:
                    outer.append(node.returns)
            for child in outer:
                self.visit(child, shadow)
            inner = shadow | self._locals(node)
            for child in (node.body if isinstance(node.body, list) else [node.body]):
                self.visit(child, inner)
            return
        if isinstance(node, ast.ClassDef):
            for child in node.decorator_list + node.bases + node.keywords:
                self.visit(child, shadow)
            class_shadow = shadow | self._locals(node)
            for stmt in node.body:
                self.visit(stmt, shadow if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) else class_shadow)
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            inner = shadow | {n for g in node.generators for n in _store_names(g.target)}
            for child in ast.iter_child_nodes(node):
                self.visit(child, inner)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return
        if isinstance(node, ast.Attribute):
            chain = []
            cur = node
            while isinstance(cur, ast.Attribute):
                chain.append(cur)
                cur = cur.value
            if isinstance(cur, ast.Name) and isinstance(cur.ctx, ast.Load) and cur.id not in shadow:
                b = self.info.bindings.get(cur.id)
                if b is not None and b[0] == "module":
                    self._resolve_chain(cur, list(reversed(chain)), b[1])
                    return
            self.visit(node.value, shadow)
            return
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load) and node.id not in shadow:
                b = self.info.bindings.get(node.id)
                if b is not None and b[0] == "name":
                    self._record(node.lineno - 1, self.index.resolve_name(b[1], b[2]), node.id)
            return
        for child in ast.iter_child_nodes(node):
            self.visit(child, shadow)

    def _resolve_chain(self, base: ast.Name, chain: list[ast.Attribute], module: str) -> None:
        written = base.id
        for attr in chain:
            written += "." + attr.attr
            sub = f"{module}.{attr.attr}"
            if sub in self.index.modules:
                module = sub
                continue
            if attr.end_lineno == base.lineno:  # the whole 'mod.name' sits on one line
                self._record(base.lineno - 1, self.index.resolve_name(module, attr.attr), written)
            return

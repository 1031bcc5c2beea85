"""Source projects: real Python code read from disk (installed distributions or directories of repositories).

A :class:`Project` is an in-memory snapshot: every readable ``.py`` file with its module name, text and sha256.
Files that cannot be used (not UTF-8 / binary, too large, not parseable) are never dropped silently: they are
listed in ``Project.skipped`` with a reason, and the builder copies that list into the manifest. Bytes become text
by :func:`deltalens.core.source_text.decode_source` (UTF-8 only, a leading BOM dropped, newlines ``\\n``), the same rule
as the code-LM corpus.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata as md
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..core.source_text import decode_source

SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "venv", "env"}


class SourceError(ValueError):
    """A source (installed distribution, directory) that cannot be used, with the reason."""


@dataclass(frozen=True)
class SourceFile:
    path: str  # path relative to the project root, '/'-separated
    module: str  # dotted module name ('pkg.sub' for pkg/sub/__init__.py)
    is_package: bool
    text: str  # newlines normalised to '\n'
    sha256: str  # of the raw bytes on disk
    nbytes: int


@dataclass
class Project:
    name: str
    version: str
    kind: str  # 'installed' | 'dir' | 'lca' | 'memory'
    root: str  # where it was read from (for the manifest; informative only)
    files: dict[str, SourceFile] = field(default_factory=dict)  # by path
    skipped: list[dict] = field(default_factory=list)  # {"project", "path", "reason"}

    @property
    def modules(self) -> dict[str, SourceFile]:
        return {f.module: f for f in self.files.values()}

    def manifest_entry(self) -> dict:
        return {
            "project": self.name,
            "version": self.version,
            "kind": self.kind,
            "root": self.root,
            "n_files": len(self.files),
            "n_skipped": len(self.skipped),
            "files": [{"path": p, "sha256": f.sha256, "bytes": f.nbytes} for p, f in sorted(self.files.items())],
        }


def parse_error(text: str, path: str) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(text, filename=path)
    except SyntaxError as e:
        return f"does not parse (SyntaxError line {e.lineno}: {e.msg})"
    except (ValueError, RecursionError, MemoryError) as e:  # e.g. source with NUL, absurd nesting
        return f"does not parse ({type(e).__name__}: {e})"
    return None


def module_name(relpath: str, package_dirs: set[str] | None = None, rooted: bool = False) -> tuple[str, bool]:
    """Dotted module name of ``relpath`` (a '/'-separated path ending in .py).

    ``rooted``: the path is relative to an import root (site-packages): every directory is a package level.
    Otherwise the import root is found by walking up while the directory holds ``__init__.py``
    (``package_dirs``: the set of directories that do).
    """
    parts = relpath[:-3].split("/")
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    if not rooted:
        dirs = parts[:-1] if not is_package else parts
        # keep the trailing run of directories that are packages
        keep = 0
        for i in range(len(dirs), 0, -1):
            if "/".join(dirs[:i]) in (package_dirs or set()):
                keep += 1
            else:
                break
        lead = len(dirs) - keep
        parts = parts[lead:]
    return ".".join(parts), is_package


def _add_files(project: Project, entries: list[tuple[str, Path]], max_file_bytes: int, rooted: bool) -> None:
    """entries: (relpath, absolute path), any order; read in sorted order."""
    entries = sorted(entries)
    package_dirs = {rel.rsplit("/", 1)[0] if "/" in rel else "" for rel, _ in entries if rel.endswith("__init__.py")}
    seen_modules: dict[str, str] = {}
    for rel, absolute in entries:
        try:
            raw = absolute.read_bytes()
        except OSError as e:
            project.skipped.append({"project": project.name, "path": rel, "reason": f"unreadable ({e.strerror})"})
            continue
        text, reason = decode_source(raw, max_file_bytes)
        if text is not None:
            reason = parse_error(text, rel)
        mod, is_pkg = module_name(rel, package_dirs, rooted=rooted)
        if reason is None and not mod:
            reason = "no module name (top-level __init__.py)"
        if reason is None and mod in seen_modules:
            reason = f"duplicate module name {mod!r} (already {seen_modules[mod]})"
        if reason is not None:
            project.skipped.append({"project": project.name, "path": rel, "reason": reason})
            continue
        seen_modules[mod] = rel
        project.files[rel] = SourceFile(rel, mod, is_pkg, text, hashlib.sha256(raw).hexdigest(), len(raw))


def installed_project(dist_name: str, max_file_bytes: int = 300_000) -> Project:
    """The ``.py`` files of an installed distribution (its pinned version makes the build deterministic)."""
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        raise SourceError(f"installed distribution {dist_name!r} is not installed in this environment") from None
    name = dist.metadata["Name"] or dist_name
    entries = []
    for f in dist.files or []:
        rel = str(f).replace(os.sep, "/")
        if not rel.endswith(".py") or rel.startswith("..") or ".dist-info/" in rel or "/" not in rel:
            continue  # top-level single-file modules and scripts outside the package are left out
        absolute = Path(dist.locate_file(f))
        if absolute.is_file():
            entries.append((rel, absolute))
    project = Project(name=name, version=dist.version, kind="installed", root=f"site-packages:{name}")
    _add_files(project, entries, max_file_bytes, rooted=True)
    if not project.files:
        raise SourceError(
            f"installed distribution {dist_name!r} has no usable Python files"
            + (f" ({len(project.skipped)} skipped: {project.skipped[0]['reason']}, ...)" if project.skipped else "")
        )
    return project


def _walk_py(root: Path) -> list[tuple[str, Path]]:
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
        for fn in sorted(filenames):
            if fn.endswith(".py"):
                absolute = Path(dirpath) / fn
                if absolute.is_symlink():
                    continue
                entries.append((absolute.relative_to(root).as_posix(), absolute))
    return entries


def dir_project(path: str | Path, name: str | None = None, max_file_bytes: int = 300_000,
                display_root: str | None = None) -> Project:
    """One repository directory = one project (module names found from ``__init__.py`` files)."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"project directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise SourceError(f"project path {str(path)!r} is not a directory")
    name = name or path.resolve().name
    entries = _walk_py(path)
    if (path / "__init__.py").is_file():
        # the directory is itself a package (e.g. a standard-library package): its modules are named from its
        # parent, as Python imports them (email/message.py is 'email.message', which its siblings import)
        entries = [(f"{path.resolve().name}/{rel}", absolute) for rel, absolute in entries]
    if not entries:
        raise SourceError(f"project {name!r} ({path}) has no Python files")
    project = Project(name=name, version=_dir_version(path), kind="dir", root=display_root or str(path))
    _add_files(project, entries, max_file_bytes, rooted=False)
    if not project.files:
        raise SourceError(f"project {name!r} ({path}) has no usable Python files: "
                          + "; ".join(f"{s['path']}: {s['reason']}" for s in project.skipped[:5]))
    return project


def _dir_version(path: Path) -> str:
    """A content-derived version for a user directory: 'tree:' + sha256 over (path, file hash), 12 hex digits."""
    h = hashlib.sha256()
    for rel, absolute in _walk_py(path):
        try:
            h.update(rel.encode() + b"\0" + hashlib.sha256(absolute.read_bytes()).digest())
        except OSError:
            continue
    return "tree:" + h.hexdigest()[:12]


def repos_dir_projects(path: str | Path, max_file_bytes: int = 300_000,
                       display_root: str | None = None) -> tuple[list[Project], list[dict]]:
    """Every subdirectory of ``path`` is a project. Returns (projects, skipped_projects with reasons)."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"repositories directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise SourceError(f"repositories path {str(path)!r} is not a directory")
    projects, skipped = [], []
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise SourceError(f"repositories directory {str(path)!r} has no subdirectories (one per project expected)")
    for sub in subdirs:
        shown = f"{display_root or path}/{sub.name}"
        try:
            projects.append(dir_project(sub, max_file_bytes=max_file_bytes, display_root=shown))
        except SourceError as e:
            skipped.append({"project": sub.name, "root": shown, "reason": str(e)})
    return projects, skipped


def memory_project(name: str, files: dict[str, str], version: str = "", kind: str = "memory",
                   max_file_bytes: int = 300_000) -> Project:
    """A project from {relative path: text} (used by the Long Code Arena adapter)."""
    project = Project(name=name, version=version, kind=kind, root=f"{kind}:{name}")
    rels = sorted(p for p in files if p.endswith(".py"))
    package_dirs = {r.rsplit("/", 1)[0] if "/" in r else "" for r in rels if r.endswith("__init__.py")}
    seen: dict[str, str] = {}
    for rel in rels:
        raw = files[rel].encode("utf-8", errors="surrogatepass")
        text, reason = decode_source(raw, max_file_bytes)
        if text is not None:
            reason = parse_error(text, rel)
        mod, is_pkg = module_name(rel, package_dirs)
        if reason is None and (not mod or mod in seen):
            reason = "no module name" if not mod else f"duplicate module name {mod!r}"
        if reason is not None:
            project.skipped.append({"project": name, "path": rel, "reason": reason})
            continue
        seen[mod] = rel
        project.files[rel] = SourceFile(rel, mod, is_pkg, text, hashlib.sha256(raw).hexdigest(), len(raw))
    return project

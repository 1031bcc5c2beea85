"""Build the code-context dataset from real source projects.

A sample is a completion point: a line of file F in project P that uses a definition of another module of P (found
by :mod:`.analysis`). Its context chunks, in a seeded random order, are

1. ``relevant``: the definitions (or file windows holding them) of the names the target line uses;
2. ``related``: code from other modules of P that F imports but whose definitions the line does not use;
3. ``distractor``: code from modules of P unrelated to F (F does not import them, they do not import F);
4. ``injected``: code from another project of the same split (known irrelevant; the thesis' construction).

No chunk comes from F itself; non-relevant chunks never define a name the target line uses.
"""

from __future__ import annotations

import json
import random
import re
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from ..params import ParameterError
from .analysis import Definition, ModuleInfo, ProjectIndex
from .schema import DEFAULT_HEADER, ContextDataset, assemble_prompt, make_frames, save
from .sources import Project, SourceError, dir_project, installed_project, repos_dir_projects


class ParamsError(ParameterError):
    """A dataset build parameter is wrong (a :class:`deltalens.params.ParameterError`)."""


@dataclass
class BuildParams:
    out: str = "data/processed/context"
    seed: int = 0
    installed: list = field(default_factory=list)  # distribution names
    project_dirs: list = field(default_factory=list)  # one directory = one project
    repos_dirs: list = field(default_factory=list)  # every subdirectory = one project
    granularity: str = "definition"  # 'definition' | 'file'
    n_chunks: int = 12
    max_relevant: int = 3
    max_related: int = 3
    n_injected: int = 3
    chunk_chars: int = 1500
    min_chunk_chars: int = 80
    prefix_chars: int = 2000
    suffix_chars: int = 1000
    samples_per_project: int = 40
    max_samples_per_file: int = 3
    min_target_chars: int = 8
    max_target_chars: int = 160
    max_file_bytes: int = 300_000
    test_fraction: float = 0.5
    min_samples: int = 0
    min_projects: int = 2
    header: str = DEFAULT_HEADER

    def manifest_params(self) -> dict:
        """The parameters that determine the content (everything but the output directory)."""
        d = asdict(self)
        d.pop("out")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BuildParams":
        d = dict(d or {})
        if "sources" in d:
            src = d.pop("sources")
            if src is not None:  # explicit top-level keys (e.g. --set installed=[...]) win over the sources section
                d = {**_flatten_sources(src), **d}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ParamsError(f"unknown dataset parameter(s) {unknown}; known: {sorted(known)}")
        p = cls(**d)
        p.check()
        return p

    def check(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int",) and (not isinstance(v, int) or isinstance(v, bool)):
                raise ParamsError(f"dataset parameter {f.name!r}: expected an integer, got {v!r}")
            if f.type == "list" and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                raise ParamsError(f"dataset parameter {f.name!r}: expected a list of strings, got {v!r}")
        if not isinstance(self.header, str) or "{path}" not in self.header:
            raise ParamsError(f"dataset parameter 'header': a string containing {{path}}, got {self.header!r}")
        if isinstance(self.test_fraction, bool) or not isinstance(self.test_fraction, (int, float)):
            raise ParamsError(f"dataset parameter 'test_fraction': expected a number, got {self.test_fraction!r}")
        bounds = {"n_chunks": 2, "max_relevant": 1, "max_related": 0, "n_injected": 0, "chunk_chars": 40,
                  "min_chunk_chars": 1, "prefix_chars": 1, "suffix_chars": 0, "samples_per_project": 1,
                  "max_samples_per_file": 1, "min_target_chars": 1, "max_target_chars": 1, "max_file_bytes": 1,
                  "min_samples": 0, "min_projects": 1}
        for name, low in bounds.items():
            if getattr(self, name) < low:
                raise ParamsError(f"dataset parameter {name!r}={getattr(self, name)} is too small; allowed: >= {low}")
        if self.max_relevant + self.max_related + self.n_injected > self.n_chunks:
            raise ParamsError(f"dataset parameters: max_relevant + max_related + n_injected = "
                              f"{self.max_relevant + self.max_related + self.n_injected} > n_chunks={self.n_chunks}")
        if self.min_chunk_chars > self.chunk_chars:
            raise ParamsError(f"dataset parameters: min_chunk_chars={self.min_chunk_chars} > chunk_chars={self.chunk_chars}")
        if self.min_target_chars > self.max_target_chars:
            raise ParamsError(f"dataset parameters: min_target_chars={self.min_target_chars} > "
                              f"max_target_chars={self.max_target_chars}")
        if self.granularity not in ("definition", "file"):
            raise ParamsError(f"dataset parameter 'granularity': 'definition' or 'file', got {self.granularity!r}")
        if self.n_chunks < self.max_relevant + 1 or self.max_relevant < 1:
            raise ParamsError("dataset parameters: need max_relevant >= 1 and n_chunks > max_relevant")
        if not 0.0 < float(self.test_fraction) < 1.0:
            raise ParamsError(f"dataset parameter 'test_fraction' must be in (0, 1), got {self.test_fraction!r}")
        if self.chunk_chars < 40 or self.prefix_chars < 1:
            raise ParamsError("dataset parameters: chunk_chars >= 40 and prefix_chars >= 1 required")
        if not (self.installed or self.project_dirs or self.repos_dirs):
            raise ParamsError("dataset parameters: no sources (installed / project_dirs / repos_dirs are all empty)")


def _flatten_sources(src) -> dict:
    if not isinstance(src, dict):
        raise ParamsError(f"dataset parameter 'sources' must be a mapping, got {type(src).__name__}")
    unknown = sorted(set(src) - {"installed", "project_dirs", "repos_dirs"})
    if unknown:
        raise ParamsError(f"unknown key(s) {unknown} under 'sources' (installed, project_dirs, repos_dirs)")
    return {k: list(v or []) for k, v in src.items()}


def load_params(path: str | Path, overrides: dict | None = None) -> BuildParams:
    """Read the ``dataset:`` section of a params YAML (relative paths: against the repository root)."""
    from ..paths import resolve

    path = resolve(path)
    if not path.is_file():
        raise ParamsError(f"params file {str(path)!r} does not exist")
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("dataset"), dict):
        raise ParamsError(f"{path}: expected a mapping with a 'dataset:' section")
    d = dict(doc["dataset"])
    d.update(overrides or {})
    return BuildParams.from_dict(d)


# ---- sources --------------------------------------------------------------------------------------------------------
def load_sources(p: BuildParams, root: Path) -> tuple[list[Project], list[dict]]:
    projects: list[Project] = []
    skipped_projects: list[dict] = []
    for name in p.installed:
        projects.append(installed_project(name, p.max_file_bytes))
    for d in p.project_dirs:
        projects.append(dir_project(_abs(d, root), max_file_bytes=p.max_file_bytes, display_root=d))
    for d in p.repos_dirs:
        found, skipped = repos_dir_projects(_abs(d, root), p.max_file_bytes, display_root=d)
        projects += found
        skipped_projects += skipped
    names = [pr.name for pr in projects]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SourceError(f"duplicate project name(s) {dup}: rename a directory or drop one source")
    return sorted(projects, key=lambda pr: pr.name), skipped_projects


def _abs(d: str, root: Path) -> Path:
    q = Path(d).expanduser()
    return q if q.is_absolute() else root / q


# ---- chunks -----------------------------------------------------------------------------------------------------
def _defines_pattern(names) -> re.Pattern | None:
    names = sorted(set(names))
    if not names:
        return None
    alt = "|".join(re.escape(n) for n in names)
    return re.compile(rf"^(?:(?:async\s+)?def|class)\s+(?:{alt})\b|^(?:{alt})\s*(?::[^=\n]*)?=(?!=)", re.M)


def defines_any(text: str, names) -> bool:
    """Whether ``text`` holds a top-level (column 0) definition of any of ``names``."""
    pat = _defines_pattern(names)
    return bool(pat and pat.search(text))


def _cut_lines(lines: list[str], start: int, end: int, budget: int) -> int:
    """The largest end' <= end such that lines[start:end'] fits the budget (at least one line)."""
    total, e = 0, start
    while e < end and (e == start or total + len(lines[e]) <= budget):
        total += len(lines[e])
        e += 1
    return e


def _chunk(project: Project, info: ModuleInfo, start: int, end: int, name: str, budget: int,
           head: int | None = None) -> dict:
    """Lines [start, end) cut to the budget; when decorators alone exceed it, start at ``head`` (the def line)."""
    full_end = end
    end = _cut_lines(info.lines, start, full_end, budget)
    if head is not None and end <= head:
        start = head
        end = _cut_lines(info.lines, start, full_end, budget)
    text = "".join(info.lines[start:end])
    return {"project": project.name, "path": info.file.path, "name": name, "start_line": start, "end_line": end,
            "text": text}


def _file_window(project: Project, info: ModuleInfo, budget: int, anchor: int | None = None) -> dict:
    lines = info.lines
    if anchor is None:
        return _chunk(project, info, 0, len(lines), "", budget)
    end = _cut_lines(lines, anchor, len(lines), budget)
    total = sum(len(x) for x in lines[anchor:end])
    start = anchor
    while start > 0 and total + len(lines[start - 1]) <= budget:
        start -= 1
        total += len(lines[start])
    return {"project": project.name, "path": info.file.path, "name": "", "start_line": start, "end_line": end,
            "text": "".join(lines[start:end])}


class _Pools:
    """Per project: definitions and modules big enough to be chunks."""

    def __init__(self, index: ProjectIndex, min_chars: int):
        self.index = index
        self.defs: dict[str, list[Definition]] = {}
        for mod, info in sorted(index.modules.items()):
            ds = [d for _, d in sorted(info.defs.items())
                  if sum(len(x) for x in info.lines[d.start:d.end]) >= min_chars]
            if ds:
                self.defs[mod] = ds
        self.file_modules = sorted(m for m, info in index.modules.items() if len(info.file.text) >= min_chars)

    def modules_for(self, granularity: str) -> list[str]:
        return sorted(self.defs) if granularity == "definition" else self.file_modules


def _pick_chunk(rng: random.Random, pools: _Pools, mod: str, p: BuildParams, avoid_names: set[str],
                prefer: list[str] | None = None) -> dict | None:
    index = pools.index
    info = index.modules[mod]
    if p.granularity == "file":
        c = _file_window(index.project, info, p.chunk_chars)
        return None if defines_any(c["text"], avoid_names) else c
    cands = [d for d in pools.defs.get(mod, []) if d.name not in avoid_names]
    if prefer:
        preferred = [d for d in cands if d.name in prefer]
        cands = preferred or cands
    rng.shuffle(cands)
    for d in cands:
        c = _chunk(index.project, info, d.start, d.end, d.name, p.chunk_chars, d.head)
        if not defines_any(c["text"], avoid_names):
            return c
    return None


# ---- samples ------------------------------------------------------------------------------------------------------
def candidate_lines(index: ProjectIndex, p: BuildParams) -> list[tuple[str, int]]:
    """(module, 0-based line) of every line that can be a target, sorted."""
    out = []
    for mod, info in sorted(index.modules.items()):
        for line in sorted(info.uses):
            if line in info.import_lines or line == 0:
                continue
            t = info.lines[line].rstrip("\n").strip()
            if p.min_target_chars <= len(t) <= p.max_target_chars and not t.startswith(("#", "@")):
                out.append((mod, line))
    return out


def select_candidates(cands: list[tuple[str, int]], p: BuildParams, rng: random.Random) -> list[tuple[str, int]]:
    cands = list(cands)
    rng.shuffle(cands)
    per_file: dict[str, int] = {}
    chosen = []
    for mod, line in cands:
        if len(chosen) >= p.samples_per_project:
            break
        if per_file.get(mod, 0) >= p.max_samples_per_file:
            continue
        per_file[mod] = per_file.get(mod, 0) + 1
        chosen.append((mod, line))
    return sorted(chosen)


def make_sample(index: ProjectIndex, mod: str, line: int, pools: _Pools, other_pools: list[_Pools],
                p: BuildParams, split: str, source: str = "builder", line_category: str = "inproject",
                seed_key: str | None = None) -> tuple[dict, list[dict]] | None:
    project = index.project
    info = index.modules[mod]
    f = info.file
    sample_id = f"{project.name}:{f.path}:L{line + 1}"
    rng = random.Random(f"{p.seed}:{seed_key or sample_id}")
    used = list(info.uses.get(line, []))
    written = list(info.used_names.get(line, []))
    used_def_names = {d.name for d in used}
    chunks: list[dict] = []

    # 1. relevant
    if p.granularity == "definition":
        for d in used[: p.max_relevant]:
            c = _chunk(project, index.modules[d.module], d.start, d.end, d.name, p.chunk_chars, d.head)
            chunks.append(dict(c, category="relevant", defines=[d.name]))
    else:
        by_mod: dict[str, list[Definition]] = {}
        for d in used:
            by_mod.setdefault(d.module, []).append(d)
        for m in list(by_mod)[: p.max_relevant]:
            c = _file_window(project, index.modules[m], p.chunk_chars, anchor=by_mod[m][0].head)
            defines = [d.name for d in by_mod[m] if c["start_line"] <= d.head < c["end_line"]]
            chunks.append(dict(c, category="relevant", defines=defines))
    relevant_mods = {d.module for d in used}

    # 2. related: modules F imports, whose definitions the line does not use
    bound_into: dict[str, list[str]] = {}
    for b in info.bindings.values():
        if b[0] == "name":
            d = index.resolve_name(b[1], b[2])
            if d is not None:
                bound_into.setdefault(d.module, []).append(d.name)
    related_mods = sorted((set(info.imports) | set(bound_into)) - relevant_mods - {mod})
    related_mods = [m for m in related_mods if m in pools.modules_for(p.granularity)]
    rng.shuffle(related_mods)
    n_related = 0
    for m in related_mods:
        if n_related >= p.max_related:
            break
        c = _pick_chunk(rng, pools, m, p, used_def_names, prefer=bound_into.get(m))
        if c is not None:
            chunks.append(dict(c, category="related", defines=[]))
            n_related += 1

    # 3. distractors and 4. injected
    n_injected = p.n_injected if other_pools else 0
    n_distractor = p.n_chunks - len(chunks) - n_injected
    excluded = {mod} | set(info.imports) | set(bound_into) | index.importers.get(mod, set()) | relevant_mods
    dis_mods = [m for m in pools.modules_for(p.granularity) if m not in excluded]
    rng.shuffle(dis_mods)
    for m in dis_mods:
        if n_distractor <= 0:
            break
        c = _pick_chunk(rng, pools, m, p, used_def_names)
        if c is not None:
            chunks.append(dict(c, category="distractor", defines=[]))
            n_distractor -= 1
    n_injected += max(n_distractor, 0) if other_pools else 0  # not enough distractors: fill with injected code
    tries = 0
    seen_inj = set()
    while n_injected > 0 and other_pools and tries < 50 * p.n_chunks:
        tries += 1
        op = rng.choice(other_pools)
        mods = op.modules_for(p.granularity)
        if not mods:
            continue
        m = rng.choice(mods)
        if (op.index.project.name, m) in seen_inj:
            continue
        c = _pick_chunk(rng, op, m, p, used_def_names)
        if c is not None:
            seen_inj.add((op.index.project.name, m))
            chunks.append(dict(c, category="injected", defines=[]))
            n_injected -= 1
    if not any(c["category"] == "relevant" for c in chunks) and source == "builder":
        return None

    rng.shuffle(chunks)
    lines = info.lines
    pstart = line
    total = 0
    while pstart > 0 and (pstart == line or total + len(lines[pstart - 1]) <= p.prefix_chars):
        total += len(lines[pstart - 1])
        pstart -= 1
    prefix = "".join(lines[pstart:line])
    send = _cut_lines(lines, line + 1, len(lines), p.suffix_chars) if line + 1 < len(lines) else line + 1
    suffix = "".join(lines[line + 1: send]) if p.suffix_chars > 0 else ""
    if p.suffix_chars > 0 and len(suffix) > p.suffix_chars:
        suffix = suffix[: p.suffix_chars]
    prompt, spans, query_start = assemble_prompt(chunks, f.path, prefix, p.header)
    sample = {
        "sample_id": sample_id, "source": source, "project": project.name, "project_version": project.version,
        "split": split, "path": f.path, "target_line": line, "prefix_start_line": pstart,
        "line_category": line_category, "prefix": prefix, "target": lines[line].rstrip("\n"), "suffix": suffix,
        "used_names": written, "n_chunks": len(chunks), "prompt": prompt, "query_start": query_start,
    }
    rows = []
    for i, (c, (a, b)) in enumerate(zip(chunks, spans)):
        rows.append({"sample_id": sample_id, "chunk_index": i, "category": c["category"], "project": c["project"],
                     "path": c["path"], "name": c["name"], "start_line": c["start_line"], "end_line": c["end_line"],
                     "defines": c["defines"], "text": c["text"], "char_start": a, "char_end": b})
    return sample, rows


def assign_splits(names: list[str], p: BuildParams) -> dict[str, str]:
    names = sorted(names)
    rng = random.Random(f"{p.seed}:split")
    order = list(names)
    rng.shuffle(order)
    n_test = round(len(names) * float(p.test_fraction))
    if len(names) >= 2:
        n_test = min(max(n_test, 1), len(names) - 1)
    test = set(order[:n_test])
    return {n: ("test" if n in test else "dev") for n in names}


def build_dataset(p: BuildParams, progress: bool = True, root: Path | None = None) -> ContextDataset:
    """Build in memory (see :func:`build` to also write it)."""
    from tqdm.auto import tqdm

    from ..paths import project_root

    root = root or project_root()
    projects, skipped_projects = load_sources(p, root)
    if len(projects) < p.min_projects:
        raise SourceError(f"{len(projects)} usable project(s), at least min_projects={p.min_projects} needed"
                          + (f"; skipped: {skipped_projects}" if skipped_projects else ""))
    indices, pools, candidates = {}, {}, {}
    for pr in tqdm(projects, desc="index projects", disable=not progress):
        indices[pr.name] = ProjectIndex(pr)
        pools[pr.name] = _Pools(indices[pr.name], p.min_chunk_chars)
        candidates[pr.name] = candidate_lines(indices[pr.name], p)
    splits = assign_splits([pr.name for pr in projects], p)
    warnings_ = []
    for split in sorted(set(splits.values())):
        members = sorted(n for n, s in splits.items() if s == split)
        if p.n_injected > 0 and len(members) < 2:
            # injected code comes from another project of the same split (never across the dev/test boundary)
            warnings_.append(f"split {split!r} has one project ({members[0]}): its samples get no injected chunks "
                             f"(n_injected={p.n_injected}); add projects so that every split has at least two")
    for w in warnings_:
        warnings.warn(w, stacklevel=2)
    samples, chunks = [], []
    dropped: dict[str, int] = {}
    for pr in tqdm(projects, desc="build samples", disable=not progress):
        chosen = select_candidates(candidates[pr.name], p, random.Random(f"{p.seed}:{pr.name}"))
        others = [pools[o.name] for o in projects if o.name != pr.name and splits[o.name] == splits[pr.name]]
        for mod, line in chosen:
            out = make_sample(indices[pr.name], mod, line, pools[pr.name], others, p, splits[pr.name])
            if out is None:
                dropped[pr.name] = dropped.get(pr.name, 0) + 1
                continue
            samples.append(out[0])
            chunks.extend(out[1])
    if len(samples) < p.min_samples:
        raise SourceError(f"only {len(samples)} samples built, min_samples={p.min_samples} required "
                          f"(add projects or raise samples_per_project)")
    s_df, c_df = make_frames(samples, chunks)
    manifest = {
        "dataset": "deltalens-context",
        "params": p.manifest_params(),
        "seed": p.seed,
        "sources": [pr.manifest_entry() for pr in projects],
        "skipped_files": sorted((s for pr in projects for s in pr.skipped), key=lambda s: (s["project"], s["path"])),
        "skipped_projects": skipped_projects,
        "splits": splits,
        "counts": _counts(s_df, c_df, {n: len(c) for n, c in candidates.items()}, dropped),
        "warnings": warnings_,
    }
    return ContextDataset(s_df, c_df, manifest)


def _counts(s_df, c_df, n_candidates, dropped) -> dict:
    return {
        "samples": int(len(s_df)),
        "projects": int(s_df["project"].nunique()) if len(s_df) else 0,
        "chunks": int(len(c_df)),
        "samples_per_project": {k: int(v) for k, v in sorted(s_df["project"].value_counts().items())},
        "samples_per_split": {k: int(v) for k, v in sorted(s_df["split"].value_counts().items())},
        "chunks_per_category": {k: int(v) for k, v in sorted(c_df["category"].value_counts().items())},
        "candidate_lines_per_project": dict(sorted(n_candidates.items())),
        "dropped_without_relevant": dict(sorted(dropped.items())),
    }


def build(p: BuildParams, out: str | Path | None = None, progress: bool = True) -> tuple[ContextDataset, float]:
    """Build and write atomically to ``out`` (default ``p.out``, relative to the repository root).
    Returns (dataset, seconds)."""
    from ..paths import project_root

    from .schema import refuse_foreign_dir

    t0 = time.perf_counter()
    root = project_root()
    target = _abs(str(out or p.out), root)
    refuse_foreign_dir(target)  # before the work, not only before the write
    ds = build_dataset(p, progress=progress, root=root)
    save(ds, target)
    return ds, time.perf_counter() - t0


def manifest_params_match(out: str | Path, p: BuildParams) -> bool:
    """Whether the dataset at ``out`` was built with exactly these parameters."""
    from ..paths import resolve

    m = resolve(out) / "manifest.json"
    if not m.is_file():
        return False
    try:
        return json.loads(m.read_text()).get("params") == json.loads(json.dumps(p.manifest_params()))
    except json.JSONDecodeError:
        return False

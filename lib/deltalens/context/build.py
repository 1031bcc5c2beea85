"""Build the code-context dataset from real source projects: parameters, sources -> AST indexes -> samples -> splits
and manifest, written atomically.

The jobs live in their own modules: :mod:`.sources` reads projects, :mod:`.ast_index` indexes them, :mod:`.chunks`
cuts and picks context chunks, :mod:`.samples` chooses completion points and assembles each sample (what the chunk
categories mean is written there), :mod:`.schema` validates and saves. This module holds the parameters
(:class:`BuildParams`) and the run over all projects (:func:`build_dataset`, :func:`build`).
"""

from __future__ import annotations

import json
import random
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from ..params import ParameterError
from .ast_index import ProjectIndex
from .chunks import ChunkPools, defines_any  # noqa: F401  (defines_any: also imported from here by callers)
from .samples import assign_splits, candidate_lines, make_sample, select_candidates
from .schema import DEFAULT_HEADER, ContextDataset, make_frames, save
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


# ---- build -----------------------------------------------------------------------------------------------------
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
        pools[pr.name] = ChunkPools(indices[pr.name], p.min_chunk_chars)
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

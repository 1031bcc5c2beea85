"""Build the code-context dataset from real source projects: parameters, sources -> AST indexes -> samples -> splits
and manifest, written atomically.

The jobs live in their own modules: :mod:`.sources` reads projects, :mod:`.ast_index` indexes them, :mod:`.chunks`
cuts and picks context chunks, :mod:`.samples` chooses completion points and assembles each sample (what the chunk
categories mean is written there), :mod:`.schema` validates and saves. This module holds the run over all
projects (:func:`build_dataset`, :func:`build`); its parameters live in :mod:`.build_params`.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from pathlib import Path

from .ast_index import ProjectIndex
from .build_params import BuildParams
from .chunks import ChunkPools
from .samples import assign_splits, candidate_lines, make_sample, select_candidates
from .schema import ContextDataset, make_frames, save
from .sources import Project, SourceError, dir_project, installed_project, repos_dir_projects


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

    from ..core.paths import project_root

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
    from ..core.paths import project_root
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
    from ..core.paths import resolve

    m = resolve(out) / "manifest.json"
    if not m.is_file():
        return False
    try:
        return json.loads(m.read_text()).get("params") == json.loads(json.dumps(p.manifest_params()))
    except json.JSONDecodeError:
        return False

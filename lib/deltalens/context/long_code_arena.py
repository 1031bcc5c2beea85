"""Adapter for JetBrains' Long Code Arena project-level code completion dataset
(Hugging Face ``JetBrains-Research/lca-project-level-code-completion``, configs ``small_context``,
``medium_context``, ``large_context``, ``huge_context``; split ``test``).

An LCA datapoint (one row)::

    repo                  str   '{user}__{repository}'
    commit_hash           str
    completion_file       {filename: str, content: str}
    completion_lines      {infile: [int], inproject: [int], common: [int], commited: [int],
                           non_informative: [int], random: [int]}      0-based indices into content.split('\\n')
    repo_snapshot         {filename: [str], content: [str]}            (a list of {filename, content} is accepted)
    completion_lines_raw  same categories, unfiltered (not used)

Mapping to our schema: every selected completion line becomes a sample (``source='lca'``,
``line_category`` = LCA's category, ``project`` = repo, ``project_version`` = commit hash). The repository snapshot's
Python files are analysed like a built project, so chunks get the same categories (relevant / related /
distractor); injected chunks come from the other repositories of the same conversion. A line that uses no
definition of another module of the repository gets no relevant chunk (LCA's ``infile`` lines, for instance).

``datasets`` is imported only by :func:`read_lca` when reading from the hub; a local parquet file (the dataset's own
shards) is read with pandas.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

import numpy as np

from .ast_index import ProjectIndex
from .build_params import BuildParams
from .chunks import ChunkPools
from .samples import assign_splits, make_sample
from .schema import ContextDataset, make_frames
from .sources import memory_project

LCA_REPO = "JetBrains-Research/lca-project-level-code-completion"
LCA_CONFIGS = ("small_context", "medium_context", "large_context", "huge_context")
LCA_LINE_CATEGORIES = ("infile", "inproject", "common", "commited", "non_informative", "random")
REQUIRED = ("repo", "commit_hash", "completion_file", "completion_lines", "repo_snapshot")


class LCAError(ValueError):
    pass


def _plain(v):
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, np.integer):
        return int(v)
    return v


def read_lca(config: str = "small_context", split: str = "test", parquet: str | None = None,
             limit: int | None = None) -> Iterator[dict]:
    """Rows of the LCA dataset, from a local parquet file or from the hub (needs ``datasets`` and network)."""
    if parquet is not None:
        import pandas as pd

        from ..core.paths import resolve

        df = pd.read_parquet(resolve(parquet))
        for i, row in enumerate(df.to_dict("records")):
            if limit is not None and i >= limit:
                return
            yield _plain(row)
        return
    if config not in LCA_CONFIGS:
        raise LCAError(f"unknown Long Code Arena config {config!r}; one of {LCA_CONFIGS}")
    try:
        import datasets  # noqa: F401  (optional dependency)
    except ImportError:
        raise ImportError("the Long Code Arena adapter needs the Hugging Face `datasets` package "
                          "(pip install datasets) and access to the hub; or pass parquet=<local shard>") from None
    ds = datasets.load_dataset(LCA_REPO, config, split=split)
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            return
        yield row


def _snapshot_files(snap, where: str) -> dict[str, str]:
    if isinstance(snap, dict):
        names, contents = snap.get("filename"), snap.get("content")
        if not isinstance(names, list) or not isinstance(contents, list) or len(names) != len(contents):
            raise LCAError(f"{where}: field 'repo_snapshot': expected {{filename: [str], content: [str]}} "
                           "of equal lengths")
        pairs = zip(names, contents)
    elif isinstance(snap, list):
        pairs = ((d.get("filename"), d.get("content")) for d in snap)
    else:
        raise LCAError(f"{where}: field 'repo_snapshot': expected a mapping or a list, got {type(snap).__name__}")
    out = {}
    for n, c in pairs:
        if not isinstance(n, str) or not isinstance(c, str):
            raise LCAError(f"{where}: field 'repo_snapshot': filename and content must be strings")
        out[n.lstrip("./")] = c
    return out


def check_record(rec, where: str) -> None:
    if not isinstance(rec, dict):
        raise LCAError(f"{where}: expected a mapping, got {type(rec).__name__}")
    for f in REQUIRED:
        if f not in rec:
            raise LCAError(f"{where}: field {f!r}: missing")
    cf = rec["completion_file"]
    if not (isinstance(cf, dict) and isinstance(cf.get("filename"), str) and isinstance(cf.get("content"), str)):
        raise LCAError(f"{where}: field 'completion_file': expected {{filename: str, content: str}}")
    cl = rec["completion_lines"]
    if not isinstance(cl, dict):
        raise LCAError(f"{where}: field 'completion_lines': expected a mapping of category -> [int]")
    for k, v in cl.items():
        if v is not None and not (isinstance(v, list) and all(isinstance(x, int) for x in v)):
            raise LCAError(f"{where}: field 'completion_lines.{k}': expected a list of integers")


def from_lca_records(records: Iterable[dict], *, line_categories=("inproject", "infile"), n_chunks: int = 12,
                     max_relevant: int = 3, max_related: int = 3, n_injected: int = 3, chunk_chars: int = 1500,
                     prefix_chars: int = 2000, suffix_chars: int = 1000, granularity: str = "definition",
                     max_lines_per_record: int | None = None, split: str = "test", seed: int = 0) -> ContextDataset:
    """Map LCA rows to our schema (see the module docstring)."""
    p = BuildParams(installed=["lca"], granularity=granularity, n_chunks=n_chunks, max_relevant=max_relevant,
                    max_related=max_related, n_injected=n_injected, chunk_chars=chunk_chars,
                    prefix_chars=prefix_chars, suffix_chars=suffix_chars, seed=seed)
    p.check()
    if split not in ("dev", "test", "by-repo"):
        raise LCAError(f"split must be 'dev', 'test' or 'by-repo', got {split!r}")
    loaded = []  # (record index, record, index, completion module)
    skipped = []
    for i, rec in enumerate(records):
        rec = _plain(rec)
        where = f"Long Code Arena record {i}"
        check_record(rec, where)
        files = _snapshot_files(rec["repo_snapshot"], where)
        cf = rec["completion_file"]
        path = cf["filename"].lstrip("./")
        files[path] = cf["content"]
        project = memory_project(rec["repo"], files, version=rec["commit_hash"], kind="lca")
        if path not in project.files:
            reason = next((s["reason"] for s in project.skipped if s["path"] == path), "not a Python file")
            skipped.append({"record": i, "repo": rec["repo"], "path": path, "reason": reason})
            continue
        loaded.append((i, rec, ProjectIndex(project), project.files[path].module))
    pools = {i: ChunkPools(idx, p.min_chunk_chars) for i, _, idx, _ in loaded}
    repos = sorted({rec["repo"] for _, rec, _, _ in loaded})
    splits = assign_splits(repos, p) if split == "by-repo" else {r: split for r in repos}
    samples, chunks, seen = [], [], set()
    for i, rec, idx, mod in loaded:
        others = [pools[j] for j, r2, _, _ in loaded if r2["repo"] != rec["repo"] and
                  splits[r2["repo"]] == splits[rec["repo"]]]
        n_lines = len(idx.modules[mod].lines)
        todo = [(cat, ln) for cat in line_categories for ln in sorted(rec["completion_lines"].get(cat) or [])
                if 0 < ln < n_lines]
        if max_lines_per_record is not None:
            todo = sorted(random.Random(f"{seed}:{rec['repo']}:{i}").sample(todo, min(len(todo), max_lines_per_record)),
                          key=lambda t: (line_categories.index(t[0]), t[1]))
        for cat, ln in todo:
            sid = f"{rec['repo']}@{rec['commit_hash'][:10]}:{idx.modules[mod].file.path}:L{ln + 1}"
            if sid in seen:  # a line listed under two categories: keep the first
                continue
            seen.add(sid)
            out = make_sample(idx, mod, ln, pools[i], others, p, splits[rec["repo"]], source="lca",
                              line_category=cat, seed_key=sid)
            s, rows = out
            s["sample_id"] = sid
            for r in rows:
                r["sample_id"] = sid
            samples.append(s)
            chunks.extend(rows)
    s_df, c_df = make_frames(samples, chunks)
    manifest = {"dataset": "lca", "hf_dataset": LCA_REPO, "params": p.manifest_params(),
                "line_categories": list(line_categories), "skipped_records": skipped, "splits": splits,
                "counts": {"records": len(loaded), "samples": len(samples), "chunks": len(chunks)}}
    return ContextDataset(s_df, c_df, manifest)

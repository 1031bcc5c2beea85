"""The report of a context dataset (notebooks/00_context_dataset.ipynb and ``python -m deltalens.context stats``):
summary tables, readable renderings, conclusions generated from the numbers, and ``stats.json``, what a report run
recorded (the notebook's test reads it back). The overview figure is :func:`deltalens.core.plots.dataset_overview`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .schema import CATEGORIES, ContextDataset

REPORT_DEFAULTS = {"figures_dir": "reports/figures/context", "n_render": 3, "render_chars": 600}


def summary(ds: ContextDataset) -> dict[str, pd.DataFrame]:
    """Tables: samples per project (and split), chunks per category, length statistics."""
    s, c = ds.samples, ds.chunks
    per_project = (s.groupby(["project", "split"]).size().rename("samples").reset_index()
                   .sort_values(["split", "project"]).reset_index(drop=True))
    cats = [k for k in CATEGORIES if k in set(c["category"])] + sorted(set(c["category"]) - set(CATEGORIES))
    per_cat = c["category"].value_counts().reindex(cats).fillna(0).astype(int).rename("chunks").to_frame()
    per_cat["per_sample"] = (per_cat["chunks"] / max(len(s), 1)).round(2)
    per_cat["mean_chars"] = c.assign(n=c["text"].str.len()).groupby("category")["n"].mean().reindex(cats).round(0)
    per_split_cat = pd.crosstab(c.merge(s[["sample_id", "split"]], on="sample_id")["split"], c["category"])
    lengths = pd.DataFrame({
        "prompt_chars": s["prompt"].str.len(),
        "prefix_chars": s["prefix"].str.len(),
        "target_chars": s["target"].str.len(),
        "n_chunks": s["n_chunks"].astype(int),
    }).describe().T[["mean", "min", "50%", "max"]].round(1)
    return {"samples_per_project": per_project, "chunks_per_category": per_cat,
            "chunks_per_split_and_category": per_split_cat, "lengths": lengths}


def render_sample(ds: ContextDataset, i: int | str, max_chunk_chars: int = 600, max_prefix_chars: int = 800) -> str:
    """A sample for reading: chunks in prompt order with their category, then the end of the query and the target."""
    s = ds.sample(i)
    out = [f"=== {s['sample_id']}  (split {s['split']}, uses {', '.join(s['used_names']) or '-'})"]
    for c in s["chunks"]:
        text = c["text"] if len(c["text"]) <= max_chunk_chars else c["text"][:max_chunk_chars] + "[...]\n"
        label = c["category"].upper() + (f" defines {', '.join(c['defines'])}" if c["defines"] else "")
        out.append(f"--- chunk {c['chunk_index']}: {label} | {c['project']}:{c['path']}"
                   f"{' :: ' + c['name'] if c['name'] else ''} | chars {c['char_start']}..{c['char_end']}")
        out.append(text.rstrip("\n"))
    prefix = s["prefix"][-max_prefix_chars:]
    out.append(f"--- query: {s['path']} (last {len(prefix)} of {len(s['prefix'])} chars)")
    out.append(prefix.rstrip("\n"))
    out.append(f">>> target: {s['target']}")
    return "\n".join(out)


# ---- notebook 00 ----------------------------------------------------------------------------------------------------
def report_params(params_file: str | Path, overrides: dict | None = None) -> dict:
    """The ``report:`` section of a dataset params YAML over :data:`REPORT_DEFAULTS`, then ``overrides``."""
    import yaml

    from ..core.paths import resolve

    doc = yaml.safe_load(resolve(params_file).read_text()) or {}
    return {**REPORT_DEFAULTS, **(doc.get("report") or {}), **(overrides or {})}


def sources_table(ds: ContextDataset) -> pd.DataFrame:
    """One row per source project of a built dataset: version, kind, files used / skipped, split, samples, and the
    number of lines that could have been targets."""
    m, counts = ds.manifest, ds.manifest["counts"]
    t = pd.DataFrame([{k: s[k] for k in ("project", "version", "kind", "n_files", "n_skipped")} for s in m["sources"]])
    t["split"] = t["project"].map(m["splits"])
    t["samples"] = t["project"].map(counts["samples_per_project"]).fillna(0).astype(int)
    t["candidate_lines"] = t["project"].map(counts["candidate_lines_per_project"])
    return t


def skipped_files(ds: ContextDataset) -> pd.DataFrame:
    """Source files the build could not use, with the reason (never dropped silently)."""
    return pd.DataFrame(ds.manifest.get("skipped_files", []), columns=["project", "path", "reason"])


def _positions(ds: ContextDataset) -> pd.DataFrame:
    pos = ds.chunks.merge(ds.samples[["sample_id", "n_chunks"]], on="sample_id")
    pos["position"] = pos["chunk_index"] / (pos["n_chunks"] - 1).clip(lower=1)
    return pos


def chunk_positions(ds: ContextDataset) -> pd.DataFrame:
    """Where each category's chunks sit in the prompt: relative position (0 = first chunk, 1 = last) by category."""
    return _positions(ds).groupby("category")["position"].describe()[["mean", "25%", "50%", "75%"]].round(2)


def pick_samples(ds: ContextDataset, n: int) -> list[str]:
    """``n`` sample ids to render, the first ones of each split (half from each)."""
    n = int(n)
    return ds.samples.groupby("split").head((n + 1) // 2).head(n)["sample_id"].tolist()


def conclusions(ds: ContextDataset, tables: dict[str, pd.DataFrame] | None = None) -> str:
    """Markdown bullets generated from the numbers: size and split, the relevant base rate, and whether chunk
    length or prompt position gives relevance away (length: mean ratio outside [0.8, 1.25]; position: mean relative
    positions more than 0.1 apart)."""
    tables = tables or summary(ds)
    s, c = ds.samples, ds.chunks
    per_cat = tables["chunks_per_category"]
    split_of = s.groupby("split").agg(samples=("sample_id", "size"), projects=("project", "nunique"))
    splits = ", ".join(f"{k} {int(r.samples)} samples / {int(r.projects)} projects" for k, r in split_of.iterrows())
    out = [f"* **{len(s)} samples** from {s['project'].nunique()} projects ({splits}; split by project)."]
    per_sample = ", ".join(f"{per_cat.loc[k, 'per_sample']:.1f} {k}" for k in per_cat.index)
    if "relevant" in per_cat.index and len(c):
        base = per_cat.loc["relevant", "chunks"] / len(c)
        out.append(f"* Per sample: {per_sample} chunks. Relevant chunks are {base:.0%} of all chunks: the base rate "
                   "a relevance score has to beat.")
        is_rel = c["category"] == "relevant"
        rel_len, other_len = c.loc[is_rel, "text"].str.len().mean(), c.loc[~is_rel, "text"].str.len().mean()
        ratio = rel_len / other_len if other_len else float("nan")
        cue = ("length alone partly separates them: compare every score with the length baseline"
               if not 0.8 <= ratio <= 1.25 else "length is no strong cue")
        out.append(f"* Length: relevant chunks average {rel_len:.0f} characters, the others {other_len:.0f} "
                   f"(ratio {ratio:.2f}); {cue}.")
        pos = _positions(ds)
        rel_pos = pos.loc[pos["category"] == "relevant", "position"].mean()
        other_pos = pos.loc[pos["category"] != "relevant", "position"].mean()
        gap = abs(rel_pos - other_pos)
        out.append(f"* Position: relevant chunks sit at mean relative position {rel_pos:.2f} (0 = first chunk, "
                   f"1 = last), the others at {other_pos:.2f}; "
                   + ("the seeded shuffle leaves no position cue." if gap <= 0.1 else
                      f"a position cue of {gap:.2f}: check position against the scores."))
    else:
        out.append(f"* Per sample: {per_sample} chunks; no relevant chunk, so no relevance base rate.")
    no_injected = len(set(s["sample_id"]) - set(c.loc[c["category"] == "injected", "sample_id"]))
    if no_injected:
        out.append(f"* {no_injected} sample(s) have no injected chunk (a split with a single project; see the "
                   "warnings above).")
    n_skipped = len(skipped_files(ds))
    out.append(f"* {n_skipped} source file(s) skipped, each with its reason (table above)." if n_skipped else
               "* No source file was skipped.")
    return "\n".join(out)


def write_stats(ds: ContextDataset, rendered: list[str], figures_dir: str | Path,
                figure: str = "dataset_overview.png") -> dict:
    """Record what a report run showed in ``<figures_dir>/stats.json`` (sorted keys, atomic) and return it."""
    from ..core.paths import project_root, resolve
    from ..core.runinfo import write_json

    figures_dir = resolve(figures_dir)
    counts = ds.manifest["counts"]
    stats = {"samples": counts["samples"], "projects": counts["projects"],
             "chunks_per_category": counts["chunks_per_category"], "samples_per_split": counts["samples_per_split"],
             "rendered": list(rendered), "figure": os.path.relpath(figures_dir / figure, project_root())}
    write_json(figures_dir / "stats.json", stats, sort_keys=True)
    return stats

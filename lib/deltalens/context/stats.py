"""Summary tables and readable renderings of a context dataset (used by notebooks/00_context_dataset.ipynb)."""

from __future__ import annotations

import pandas as pd

from .schema import CATEGORIES, ContextDataset


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
